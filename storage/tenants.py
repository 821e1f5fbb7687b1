"""Tenants and their API keys. A key is shown once when issued; only its sha256 is stored, and the
short public prefix it carries finds its row, so authenticating is one indexed lookup and one
constant-time comparison (the key is 256 random bits, so a fast hash is enough: nothing to brute-force)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "srk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class TenantError(ValueError):
    """A tenant name that is taken or malformed, or a key that does not exist."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts for."""

    tenant_id: str
    tenant_name: str
    key_prefix: str | None = None  # the key's public part: what rate limits count by


@dataclass(frozen=True)
class IssuedKey:
    tenant_name: str
    prefix: str
    secret: str  # the whole key, shown once


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(session: Session, name: str) -> Tenant:
    if not TENANT_NAME.match(name):
        raise TenantError(f"tenant name {name!r} must be lowercase letters, digits and '-', at most 63 characters")
    if session.scalars(select(Tenant).where(Tenant.name == name)).first() is not None:
        raise TenantError(f"tenant {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def tenant_name(session: Session, tenant_id: str) -> str:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise TenantError(f"no tenant with id {tenant_id}")
    return tenant.name


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).first()


def issue_key(session: Session, tenant: Tenant, label: str | None = None) -> IssuedKey:
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(tenant_id=tenant.id, prefix=prefix, sha256=_digest(key), label=label))
    session.flush()
    return IssuedKey(tenant_name=tenant.name, prefix=prefix, secret=key)


def authenticate(session: Session, key: str) -> Principal | None:
    """The tenant a live key belongs to; None for a malformed, unknown or revoked key."""
    match = _KEY.match(key)
    if match is None:
        return None
    row = session.execute(select(ApiKey, Tenant).join(Tenant, ApiKey.tenant_id == Tenant.id)
                          .where(ApiKey.prefix == match.group(1), ApiKey.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.ApiKey.sha256, _digest(key)):
        return None
    return Principal(tenant_id=row.Tenant.id, tenant_name=row.Tenant.name, key_prefix=row.ApiKey.prefix)


def revoke_key(session: Session, prefix: str) -> None:
    key = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if key is None:
        raise TenantError(f"no API key with prefix {prefix!r}")
    key.revoked_at = key.revoked_at or utcnow()


def list_keys(session: Session) -> list[tuple[ApiKey, Tenant]]:
    query = select(ApiKey, Tenant).join(Tenant, ApiKey.tenant_id == Tenant.id).order_by(Tenant.name, ApiKey.id)
    return [(row.ApiKey, row.Tenant) for row in session.execute(query).all()]
