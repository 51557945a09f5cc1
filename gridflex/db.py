"""Postgres: the connection pool every service uses, and the migrations that shape its tables.

Migrations are the ``migrations/*.sql`` files, applied in file-name order, each once, each in
its own transaction, recorded in ``schema_migrations``. An advisory lock serializes the runners,
so two workers starting at once apply each file exactly once between them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import orjson
import structlog

from gridflex import REPO_ROOT
from gridflex.calendar import iso_instant

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "migrations"
# Any constant both runners agree on; the value spells "gridflex" in ASCII.
MIGRATION_LOCK = 0x67726964666C6578

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
)


async def _init_connection(connection: asyncpg.Connection) -> None:
    # jsonb in and out as Python values, not strings.
    await connection.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections read and write ``jsonb`` as Python values."""
    return await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60,
    )


async def migrate(pool: asyncpg.Pool, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not applied yet; return their versions (file names without ``.sql``)."""
    applied_now: list[str] = []
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        try:
            # Inside the lock: CREATE TABLE IF NOT EXISTS itself races when run concurrently.
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
            for path in sorted(directory.glob("*.sql")):
                version = path.stem
                if version in applied:
                    continue
                async with connection.transaction():
                    await connection.execute(path.read_text())
                    await connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                log.info("migration applied", version=version)
                applied_now.append(version)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


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
                    pool = await create_pool(self.database_url)
                    try:
                        await migrate(pool)
                    except BaseException:
                        await pool.close()
                        raise
                    self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def write(self, write: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
        """Run ``write`` in one transaction; while Postgres is unavailable, wait and try again,
        never skip (the batch's input is not committed meanwhile)."""
        delay = RETRY_FIRST_S
        while True:
            try:
                pool = await self.pool()
                async with pool.acquire() as connection, connection.transaction():
                    await write(connection)
                return
            except TRANSIENT_ERRORS as exc:
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
