"""Keys recently found valid, kept for a few seconds so a client polling every second costs no key lookup in the
database. Only live keys are kept (an unknown key is looked up every time), under the sha256 of the key, and a
revoked key stops working within the time-to-live."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

from storage.tenants import Principal


class KeyCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s, self._max_entries = ttl_s, max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _name(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> Principal | None:
        if self._ttl_s <= 0:
            return None
        name = self._name(key)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry[0] < time.monotonic():
                self._entries.pop(name, None)
                return None
            return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        if self._ttl_s <= 0:
            return
        with self._lock:
            self._entries[self._name(key)] = (time.monotonic() + self._ttl_s, principal)
            self._entries.move_to_end(self._name(key))
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
