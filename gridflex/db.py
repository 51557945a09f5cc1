"""Postgres: the connection pool every service uses, and the migrations that shape its tables.

Migrations are the ``migrations/*.sql`` files, applied in file-name order, each once, each in
its own transaction, recorded in ``schema_migrations``. An advisory lock serializes the runners,
so two workers starting at once apply each file exactly once between them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import structlog

from gridflex import REPO_ROOT

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "migrations"
# Any constant both runners agree on; the value spells "gridflex" in ASCII.
MIGRATION_LOCK = 0x67726964666C6578

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


def with_search_path(database_url: str, schema: str) -> str:
    """The database URL with ``schema`` as the only schema its connections see (a demo's or a
    benchmark's private copy of the tables)."""
    parts = urlsplit(database_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"] + [("search_path", schema)]
    return parts._replace(query=urlencode(query)).geturl()

