"""Who a request acts for. With API keys required, a request carries `Authorization: Bearer <key>`; the key's
tenant scopes every query, so another tenant's job or catalog is a 404 (not a 403: its existence is not
revealed), and each key is rate limited. Without keys (the embedded single-user mode) everything is the
default tenant's."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SessionDep, SettingsDep
from storage.models import DEFAULT_TENANT_ID
from storage.tenants import Principal, authenticate

DEFAULT_PRINCIPAL = Principal(tenant_id=DEFAULT_TENANT_ID, tenant_name="default")
_bearer = HTTPBearer(auto_error=False, description="an API key from `shrinkray keys create`")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def _principal(request: Request, session: SessionDep, settings: SettingsDep,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    if not settings.auth_required:
        return DEFAULT_PRINCIPAL
    if credentials is None:
        raise _unauthorized("an API key is required: send the header 'Authorization: Bearer <key>'")
    cache = request.app.state.key_cache
    principal = cache.get(credentials.credentials)
    if principal is None:
        principal = authenticate(session, credentials.credentials)
        session.rollback()  # end the read's transaction: the route may begin its own
        if principal is None:
            raise _unauthorized("the API key is not valid (malformed, unknown or revoked)")
        cache.put(credentials.credentials, principal)
    limiter = request.app.state.rate_limiter
    wait_s = limiter.retry_after(principal.key_prefix or "") if limiter is not None else None
    if wait_s is not None:
        raise HTTPException(status_code=429, headers={"Retry-After": str(wait_s)},
                            detail=f"more than {settings.rate_limit_requests} requests in "
                                   f"{settings.rate_limit_window_s} s with this key; retry in {wait_s} s")
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]
