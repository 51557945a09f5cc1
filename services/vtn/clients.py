"""``gridflex vtn client …``: the OAuth clients of the OpenADR VTN, registered by an operator.

A business-logic client (the utility's dispatch system) writes events and reads everything; a
VEN client is one provider (its client id is the provider id) and sees only what is addressed to
it. The secret is printed once; only its scrypt hash is kept.
"""

from __future__ import annotations

import asyncio

import click

from gridflex.command_params import ProviderId


def _database():
    from gridflex.programs import ProgramCatalogue
    from services.vtn.settings import VtnSettings
    from services.vtn.storage import Database

    settings = VtnSettings()
    return Database(settings.database_url, ProgramCatalogue.load(settings.programs_dir))


def _register(client_id: str, role: str, rotate: bool) -> None:
    from services.vtn.storage import ClientExists

    async def apply() -> str:
        database = _database()
        try:
            return await database.add_client(client_id, role, rotate=rotate)
        finally:
            await database.close()

    try:
        secret = asyncio.run(apply())
    except ClientExists as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"client_id: {client_id}\nclient_secret: {secret}")
    click.echo("Store the secret now: only its hash is kept, it cannot be shown again.", err=True)


@click.group("vtn")
def vtn_group() -> None:
    """The OpenADR 3.1 VTN (services/vtn)."""


@vtn_group.group("client")
def client() -> None:
    """OAuth 2.0 clients (client-credentials grant) of the VTN."""


@client.command("add-ven")
@click.argument("provider_id", type=ProviderId())
@click.option("--rotate", is_flag=True, help="Give an existing client a new secret (its tokens stop working).")
def add_ven(provider_id: str, rotate: bool) -> None:
    """Register the VEN of PROVIDER_ID (its client id is the provider id); prints its secret once."""
    _register(provider_id, "VEN", rotate)


@client.command("add-bl")
@click.argument("client_id")
@click.option("--rotate", is_flag=True, help="Give an existing client a new secret (its tokens stop working).")
def add_bl(client_id: str, rotate: bool) -> None:
    """Register a business-logic client (e.g. the utility's dispatch system); prints its secret once."""
    if not 1 <= len(client_id) <= 128 or not client_id.isprintable() or " " in client_id:
        raise click.BadParameter("1-128 printable characters without spaces", param_hint="CLIENT_ID")
    _register(client_id, "BL", rotate)


@client.command("revoke")
@click.argument("client_id")
def revoke(client_id: str) -> None:
    """Revoke a client: its tokens stop working at once and it can get no more."""

    async def apply() -> bool:
        database = _database()
        try:
            return await database.revoke_client(client_id)
        finally:
            await database.close()

    if not asyncio.run(apply()):
        raise click.ClickException(f"no active client {client_id!r}")
    click.echo(f"{client_id}: revoked")


@client.command("list")
def list_clients() -> None:
    """Every client: id, role, scopes, registered, revoked (never secrets)."""

    async def fetch() -> list[dict]:
        database = _database()
        try:
            return await database.clients()
        finally:
            await database.close()

    for row in asyncio.run(fetch()):
        revoked = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
        click.echo(f"{row['client_id']}\t{row['role']}\t{' '.join(row['scopes'])}\t"
                   f"{row['created_at']:%Y-%m-%d %H:%M}\t{revoked}")
