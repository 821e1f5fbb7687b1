"""`shrinkray keys`: the operator's commands for tenants and their API keys, straight against the database
(SHRINKRAY_DATABASE_URL), so the first key can be made before anyone can call the API."""

from __future__ import annotations

from typing import Annotated

import typer

from shrinkray.services import session_factory
from shrinkray.settings import Settings
from storage.db import transaction
from storage.tenants import TenantError, create_tenant, issue_key, list_keys, revoke_key, tenant_by_name

keys_app = typer.Typer(no_args_is_help=True, help="Tenants and their API keys (only a key's hash is stored).")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@keys_app.command("create")
def create(tenant: Annotated[str, typer.Option(help="the team the key acts for; created if new")],
           label: Annotated[str | None, typer.Option(help="what the key is for, shown by `keys list`")] = None) -> None:
    """Issue a key; it is printed once (on stdout, alone) and cannot be shown again."""
    try:
        with transaction(session_factory(Settings())) as session:
            owner = tenant_by_name(session, tenant)
            if owner is None:
                owner = create_tenant(session, tenant)
                typer.echo(f"created tenant {tenant}", err=True)
            issued = issue_key(session, owner, label)
    except TenantError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"key {issued.prefix} for tenant {tenant}; send it as 'Authorization: Bearer <key>' "
               "(the CLI reads SHRINKRAY_API_KEY)", err=True)
    typer.echo(issued.secret)


@keys_app.command("list")
def list_() -> None:
    """Every key's prefix, tenant, label and state (never the key itself)."""
    with transaction(session_factory(Settings())) as session:
        for key, tenant in list_keys(session):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            typer.echo(f"{key.prefix}  {tenant.name:<20} {state:<24} {key.label or ''}")


@keys_app.command("revoke")
def revoke(prefix: Annotated[str, typer.Argument(help="the key's prefix, as `keys list` shows it")]) -> None:
    """Revoke a key at once: requests with it get 401 from the next one on."""
    try:
        with transaction(session_factory(Settings())) as session:
            revoke_key(session, prefix)
    except TenantError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"revoked {prefix}")
