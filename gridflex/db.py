"""Postgres: the connection pool every service uses, and the migrations that shape its tables.

Migrations are the ``migrations/*.sql`` files, applied by yoyo-migrations (a versioned migration
tool) in dependency order (``-- depends:`` headers), each once, each in its own transaction,
recorded in yoyo's ``_yoyo_migration`` table. yoyo's lock serializes the runners, so two workers
starting at once apply each file exactly once between them. ``make up`` runs them
(``gridflex db migrate``), and so does every service that uses Postgres, at start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import orjson
import psycopg
import structlog
from yoyo import get_backend, read_migrations

from gridflex import REPO_ROOT
from gridflex.calendar import iso_instant
from gridflex.metrics import error

log = structlog.get_logger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = REPO_ROOT / "migrations"
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0

# Errors after which the same statement may succeed if tried again: the server is down,
# restarting, out of connections, or rolled the transaction back for a conflict.
TRANSIENT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.TransactionRollbackError,
    psycopg.OperationalError,  # yoyo's connection, when the migrations run on first use
)


async def _init_connection(connection: asyncpg.Connection) -> None:
    # jsonb in and out as Python values, not strings; in the binary format (a version byte, then
    # the JSON text), which COPY needs too.
    await connection.set_type_codec("jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog",
                                    format="binary")


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + (value.encode() if isinstance(value, JsonText) else json.dumps(value).encode())


def _jsonb_decode(data: bytes) -> Any:
    return json.loads(data[1:])


class JsonText(str):
    """JSON already serialized: passed to a jsonb parameter as is."""


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections read and write ``jsonb`` as Python values."""
    return await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60,
    )


def _yoyo_url(database_url: str) -> str:
    """The database URL as yoyo reads it: psycopg as the driver, and a private schema (see
    :func:`with_search_path`) passed as yoyo's ``schema`` parameter."""
    parts = urlsplit(database_url)
    query = [("schema" if key == "search_path" else key, value) for key, value in parse_qsl(parts.query)]
    return parts._replace(scheme="postgresql+psycopg", query=urlencode(query)).geturl()


def migrate_now(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not applied yet; return their ids (file names without ``.sql``)."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        migrations = read_migrations(str(directory))
        with backend.lock():
            _adopt_earlier_records(backend, migrations)
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    for migration in pending:
        log.info("migration applied", version=migration.id)
    return [migration.id for migration in pending]


def _adopt_earlier_records(backend, migrations) -> None:
    """Databases set up before gridflex used yoyo recorded their migrations in
    ``schema_migrations``: mark those as applied in yoyo's table (once), so they are not run again."""
    if "schema_migrations" not in backend.list_tables():
        return
    applied = {row[0] for row in backend.execute("SELECT version FROM schema_migrations").fetchall()}
    backend.mark_migrations(backend.to_apply(migrations.filter(lambda migration: migration.id in applied)))
    with backend.transaction():
        backend.execute("DROP TABLE schema_migrations")
    log.info("earlier migration records adopted", versions=sorted(applied))


async def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """:func:`migrate_now` off the event loop (yoyo is synchronous)."""
    return await asyncio.to_thread(migrate_now, database_url, directory)


async def create_schema(database_url: str, schema: str) -> str:
    """A private schema (a test's, a benchmark's); the database URL whose connections live in it."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await connection.close()
    return with_search_path(database_url, schema)


async def drop_schema(database_url: str, schema: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def with_search_path(database_url: str, schema: str) -> str:
    """The database URL with ``schema`` as the only schema its connections see (a demo's or a
    benchmark's private copy of the tables)."""
    parts = urlsplit(database_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return parts._replace(query=urlencode(query)).geturl()



CREDENTIAL_TABLES = {"provider": ("provider_credentials", "provider_id"),
                     "operator": ("operator_credentials", "operator_id")}


@dataclass(frozen=True)
class Caller:
    """Who an API request comes from: a provider (sees its own customers) or an operator (all)."""

    role: str  # provider, operator
    owner: str

    @property
    def provider_id(self) -> str | None:
        return self.owner if self.role == "provider" else None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Database:
    """A service's tables: the pool connects, and the migrations run, on first use (services build
    this at import time, before any event loop runs); projection writes wait out an outage."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        """The pool, connected and migrated on first use."""
        if self._pool is None:
            async with self._connecting:
                if self._pool is None:
                    await migrate(self.database_url)
                    self._pool = await create_pool(self.database_url)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- API credentials: only a token's SHA-256 is stored ---------------------------------------

    async def mint_credential(self, owner: str, role: str = "provider") -> str:
        """A new API token for a provider (or, with ``role="operator"``, an operator); only its
        SHA-256 is kept, so show it now or never."""
        token = secrets.token_urlsafe(32)
        table, column = CREDENTIAL_TABLES[role]
        pool = await self.pool()
        await pool.execute(f"INSERT INTO {table} (token_sha256, {column}) VALUES ($1, $2)", token_digest(token), owner)
        return token

    async def revoke_credentials(self, owner: str, role: str = "provider") -> int:
        """Revoke every token of the owner; returns how many were still valid."""
        table, column = CREDENTIAL_TABLES[role]
        pool = await self.pool()
        status = await pool.execute(
            f"UPDATE {table} SET revoked_at = now() WHERE {column} = $1 AND revoked_at IS NULL", owner)
        return int(status.split()[-1])

    async def provider_of_token(self, token: str) -> str | None:
        """The provider a valid (not revoked) token belongs to."""
        caller = await self.caller_of_token(token)
        return caller.owner if caller is not None and caller.role == "provider" else None

    async def caller_of_token(self, token: str) -> "Caller | None":
        """Who a valid (not revoked) token belongs to: an operator or a provider."""
        pool = await self.pool()
        row = await pool.fetchrow(
            "SELECT 'operator' AS role, operator_id AS owner FROM operator_credentials"
            " WHERE token_sha256 = $1 AND revoked_at IS NULL"
            " UNION ALL SELECT 'provider', provider_id FROM provider_credentials"
            " WHERE token_sha256 = $1 AND revoked_at IS NULL LIMIT 1", token_digest(token))
        return None if row is None else Caller(row["role"], row["owner"])

    async def write(self, write: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``write`` in one transaction and return what it returns; while Postgres is
        unavailable (or the transaction lost a deadlock), wait and try again, never skip (the
        batch's input is not committed meanwhile)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                pool = await self.pool()
                async with pool.acquire() as connection, connection.transaction():
                    return await write(connection)
            except TRANSIENT_ERRORS as exc:
                error("database")
                log.warning("postgres unavailable; retrying the batch", error=type(exc).__name__,
                            detail=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)


def json_ready(value: Any) -> Any:
    """A decoded Avro value as JSON values: dates and instants as ISO 8601 strings."""
    if isinstance(value, date):
        return _json_date(value)
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def json_text(value: Any) -> str:
    """The JSON text of a decoded Avro value, dates and instants as :func:`json_ready` writes them."""
    return orjson.dumps(value, default=_json_date, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def _json_date(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def columns(rows: list[tuple]) -> list[list]:
    """Rows as one list per column: the arrays an ``unnest`` statement takes."""
    return [list(column) for column in zip(*rows)]
