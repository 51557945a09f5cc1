"""The VTN's tables (migrations/005_vtn.sql): OAuth clients and tokens, the projections of the
dispatch lifecycle (events, decisions) and of the enrollment state (thermostats), reports,
subscriptions and the webhook outbox.

Projections are idempotent under at-least-once delivery: an event row changes only for a higher
revision, a decision is keyed by the offset of the request it answers, an account's enrollments
only for a later offset of its partition, a notification by (subscription, URL, event, revision,
operation).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import structlog

from gridflex import db
from gridflex.batch import Batch, InputRecord
from gridflex.codec import Undecodable
from gridflex.db import json_text
from gridflex.programs import ProgramCatalogue
from services.vtn.domain import access
from services.vtn.domain.access import Caller
from services.vtn.domain.events import StoredEvent, event_object, lifecycle_operation

log = structlog.get_logger(__name__)

SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
PROGRESS = ("SCHEDULED", "STARTED", "ENDED")
EVENT_COLUMNS = ("event_id, program_id, revision, reason, start_at, end_at, setpoint_offset_f, precool, targets, "
                 "details, progress, created_at, modified_at")


class ClientExists(Exception):
    """A client id is registered already (rotate its secret instead)."""


# -- secrets -----------------------------------------------------------------------------------


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(digest) // 2)
    return hmac.compare_digest(candidate.hex(), digest)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _stored_event(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(
        event_id=row["event_id"], program_id=row["program_id"], revision=row["revision"], reason=row["reason"],
        start=row["start_at"], end=row["end_at"], setpoint_offset_f=row["setpoint_offset_f"],
        precool=row["precool"], targets=tuple(row["targets"]), details=row["details"], progress=row["progress"],
        created_at=row["created_at"], modified_at=row["modified_at"],
    )


class Database(db.Database):
    def __init__(self, database_url: str, programs: ProgramCatalogue):
        super().__init__(database_url)
        self.programs = programs

    # -- clients and tokens ---------------------------------------------------------------------

    async def add_client(self, client_id: str, role: str, *, rotate: bool = False) -> str:
        """Register a client (or, with ``rotate``, give an existing one a new secret and revoke its
        tokens); returns the secret, which is not kept."""
        secret = secrets.token_urlsafe(32)
        hashed = await asyncio.to_thread(hash_secret, secret)
        scopes = list(access.ROLE_SCOPES[role])
        pool = await self.pool()
        async with pool.acquire() as connection, connection.transaction():
            existing = await connection.fetchrow("SELECT role FROM vtn_clients WHERE client_id = $1 FOR UPDATE",
                                                 client_id)
            if existing is not None and not rotate:
                raise ClientExists(f"client {client_id!r} exists; use --rotate to give it a new secret")
            if existing is not None and existing["role"] != role:
                raise ClientExists(f"client {client_id!r} is a {existing['role']} client, not {role}")
            if existing is None:
                await connection.execute(
                    "INSERT INTO vtn_clients (client_id, role, secret_hash, scopes) VALUES ($1, $2, $3, $4)",
                    client_id, role, hashed, scopes)
            else:
                await connection.execute(
                    "UPDATE vtn_clients SET secret_hash = $2, scopes = $3, revoked_at = NULL, modified_at = now()"
                    " WHERE client_id = $1", client_id, hashed, scopes)
                await connection.execute("DELETE FROM vtn_tokens WHERE client_id = $1", client_id)
        return secret

    async def revoke_client(self, client_id: str) -> bool:
        pool = await self.pool()
        async with pool.acquire() as connection, connection.transaction():
            status = await connection.execute(
                "UPDATE vtn_clients SET revoked_at = now(), modified_at = now()"
                " WHERE client_id = $1 AND revoked_at IS NULL", client_id)
            await connection.execute("DELETE FROM vtn_tokens WHERE client_id = $1", client_id)
        return status.endswith(" 1")

    async def clients(self) -> list[dict]:
        pool = await self.pool()
        rows = await pool.fetch("SELECT client_id, role, scopes, created_at, revoked_at FROM vtn_clients"
                                " ORDER BY role, client_id")
        return [dict(row) for row in rows]

    async def authenticate(self, client_id: str, secret: str) -> tuple[str, tuple[str, ...]] | None:
        """(role, scopes) of an active client whose secret matches."""
        pool = await self.pool()
        row = await pool.fetchrow("SELECT role, secret_hash, scopes FROM vtn_clients"
                                  " WHERE client_id = $1 AND revoked_at IS NULL", client_id)
        # An unknown client costs the same hashing as a known one: the answer's time says nothing.
        stored = row["secret_hash"] if row is not None else "scrypt$16384$8$1$" + "00" * 16 + "$" + "00" * 32
        matches = await asyncio.to_thread(secret_matches, secret, stored)
        return (row["role"], tuple(row["scopes"])) if row is not None and matches else None

    async def mint_token(self, client_id: str, scopes: tuple[str, ...], ttl: timedelta) -> str:
        token = secrets.token_urlsafe(32)
        pool = await self.pool()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM vtn_tokens WHERE expires_at < now() - interval '1 day'")
            await connection.execute(
                "INSERT INTO vtn_tokens (token_sha256, client_id, scopes, expires_at) VALUES ($1, $2, $3, now() + $4)",
                token_digest(token), client_id, list(scopes), ttl)
        return token

    async def caller(self, token: str) -> Caller | None:
        pool = await self.pool()
        row = await pool.fetchrow(
            "SELECT t.client_id, c.role, t.scopes FROM vtn_tokens t JOIN vtn_clients c USING (client_id)"
            " WHERE t.token_sha256 = $1 AND t.expires_at > now() AND c.revoked_at IS NULL", token_digest(token))
        return None if row is None else Caller(row["client_id"], row["role"], frozenset(row["scopes"]))

    async def vens(self) -> list[asyncpg.Record]:
        pool = await self.pool()
        return await pool.fetch("SELECT client_id, created_at, modified_at FROM vtn_clients"
                                " WHERE role = 'VEN' AND revoked_at IS NULL ORDER BY client_id")

    # -- events -----------------------------------------------------------------------------------

    async def event(self, event_id: str, *, cancelled: bool = False) -> StoredEvent | None:
        """The event as it stands; a cancelled one only with ``cancelled``."""
        pool = await self.pool()
        row = await pool.fetchrow(f"SELECT {EVENT_COLUMNS} FROM vtn_events WHERE event_id = $1"
                                  " AND ($2 OR cancelled_at IS NULL)", event_id, cancelled)
        return None if row is None else _stored_event(row)

    async def events(self, program_id: str | None, ends_after: datetime | None) -> list[StoredEvent]:
        pool = await self.pool()
        rows = await pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM vtn_events WHERE cancelled_at IS NULL"
            " AND ($1::text IS NULL OR program_id = $1) AND ($2::timestamptz IS NULL OR end_at > $2)"
            " ORDER BY created_at, event_id", program_id, ends_after)
        return [_stored_event(row) for row in rows]

    async def record_request(self, event_id: str, action: str, issued_at: datetime, details: dict) -> None:
        pool = await self.pool()
        await pool.execute("INSERT INTO vtn_requests (event_id, action, issued_at, details) VALUES ($1, $2, $3, $4)"
                           " ON CONFLICT DO NOTHING", event_id, action, issued_at, details)

    async def decision(self, source_offset: int) -> asyncpg.Record | None:
        pool = await self.pool()
        return await pool.fetchrow("SELECT event_id, status, revision, failures FROM vtn_decisions"
                                   " WHERE source_offset = $1", source_offset)

    async def change_details(self, event_id: str, details: dict, modified_at: datetime) -> None:
        """What only the VTN keeps (eventName, priority, reportDescriptors) changed; the dispatch did not."""
        pool = await self.pool()
        await pool.execute("UPDATE vtn_events SET details = $2, modified_at = $3 WHERE event_id = $1",
                           event_id, details, modified_at)

    # -- the lifecycle projection -------------------------------------------------------------------

    async def project_lifecycle(self, batch: Batch) -> None:
        """Decisions, events as they stand, and the notifications each change owes subscribers."""
        records = []
        for record in batch.records:
            if isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
            else:
                records.append(record)
        if records:
            await self.write(lambda connection: self._apply_lifecycle(connection, records))

    async def _apply_lifecycle(self, connection: asyncpg.Connection, records: list[InputRecord]) -> None:
        subscriptions = None
        for record in records:
            step = record.value
            if step["source_offset"] is not None:
                await connection.execute(
                    "INSERT INTO vtn_decisions (source_offset, event_id, status, revision, failures, decided_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    step["source_offset"], step["event_id"], step["status"], step["revision"], step["failures"],
                    step["decided_at"])
            if not await self._apply_step(connection, step):
                continue
            operation = lifecycle_operation(step["status"])
            if operation is None:
                continue
            if subscriptions is None:
                subscriptions = await connection.fetch(
                    "SELECT subscription_id, client_id, role, body, created_at FROM vtn_subscriptions")
            await self._enqueue(connection, record, operation, subscriptions)

    async def _apply_step(self, connection: asyncpg.Connection, step: dict) -> bool:
        """Apply one lifecycle step to its event; whether it changed the event."""
        status, event_id = step["status"], step["event_id"]
        stored = await connection.fetchrow("SELECT revision, progress FROM vtn_events WHERE event_id = $1 FOR UPDATE",
                                           event_id)
        if status in ("SCHEDULED", "UPDATED"):
            if stored is not None and stored["revision"] >= step["revision"]:
                return False
            details = await connection.fetchval(
                "SELECT details FROM vtn_requests WHERE event_id = $1 AND action = $2 AND issued_at = $3",
                event_id, step["request_action"], step["issued_at"])
            values = (event_id, step["program_id"], step["revision"], step["reason"], step["start"], step["end"],
                      step["setpoint_offset_f"], step["precool"], sorted(step["targets"]), step["decided_at"])
            if stored is None:
                await connection.execute(
                    "INSERT INTO vtn_events (event_id, program_id, revision, reason, start_at, end_at,"
                    " setpoint_offset_f, precool, targets, details, progress, created_at, modified_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $11, 'SCHEDULED', $10, $10)",
                    *values, details or {})
            else:
                await connection.execute(
                    "UPDATE vtn_events SET program_id = $2, revision = $3, reason = $4, start_at = $5, end_at = $6,"
                    " setpoint_offset_f = $7, precool = $8, targets = $9, modified_at = $10,"
                    " details = COALESCE($11, details) WHERE event_id = $1", *values, details)
            return True
        if stored is None:
            return False  # a step of an event this VTN never saw scheduled (its records were deleted)
        if status == "CANCELLED":
            if stored["revision"] >= step["revision"]:
                return False
            await connection.execute(
                "UPDATE vtn_events SET revision = $2, cancelled_at = $3, modified_at = $3, end_at = $4"
                " WHERE event_id = $1", event_id, step["revision"], step["decided_at"], step["end"])
            return True
        if status in ("STARTED", "ENDED") and PROGRESS.index(status) > PROGRESS.index(stored["progress"]):
            await connection.execute("UPDATE vtn_events SET progress = $2 WHERE event_id = $1", event_id, status)
            return True
        return False

    async def _enqueue(self, connection: asyncpg.Connection, record: InputRecord, operation: str,
                       subscriptions: list[asyncpg.Record]) -> None:
        step = record.value
        row = await connection.fetchrow(f"SELECT {EVENT_COLUMNS} FROM vtn_events WHERE event_id = $1",
                                        step["event_id"])
        event = _stored_event(row)
        program = self.programs.programs.get(event.program_id)
        produced_at = datetime.fromtimestamp(record.timestamp_ms / 1000, timezone.utc)
        for subscription in subscriptions:
            body = subscription["body"]
            if subscription["created_at"] > produced_at:
                continue  # history replayed: subscribers hear of changes made after they subscribed
            if body.get("programID") not in (None, event.program_id):
                continue
            subscriber = Caller(subscription["client_id"], subscription["role"], frozenset())
            visible, shown = access.visible_targets(subscriber, event.targets, body.get("targets") or [])
            if not visible:
                continue
            notification = {"objectType": "EVENT", "operation": operation,
                            "object": event_object(event, program, shown), "targets": list(shown or ()) or None}
            for entry in body["objectOperations"]:
                if "EVENT" not in entry["objects"] or operation not in entry["operations"]:
                    continue
                # A replayed dead letter (the same lifecycle record again) revives a dead notification.
                await connection.execute(
                    "INSERT INTO vtn_notifications (subscription_id, callback_url, bearer_token, body, event_id,"
                    " revision, operation, source_topic, source_partition, source_offset, source_key, source_value)"
                    " VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7, $8, $9, $10, $11, $12)"
                    " ON CONFLICT (subscription_id, callback_url, event_id, revision, operation) DO UPDATE"
                    " SET state = 'PENDING', attempts = 0, next_attempt_at = now()"
                    " WHERE vtn_notifications.state = 'DEAD'",
                    subscription["subscription_id"], entry["callbackUrl"], entry.get("bearerToken"),
                    json_text(notification), event.event_id, step["revision"], operation, record.topic,
                    record.partition, record.offset, record.key, record.raw)

    # -- the enrollment projection: thermostats ------------------------------------------------------

    async def project_accounts(self, batch: Batch) -> None:
        latest: dict[str, tuple] = {}
        for record in batch.records:
            if record.raw is None and record.key is not None:  # a tombstone: nothing enrolled any more
                account = record.key.decode()
                latest[account] = (account, "[]", record.partition, record.offset)
            elif isinstance(record.value, Undecodable):
                batch.dead_letter(record, record.value.reason_code, record.value.reason)
            else:
                account = record.value["service_account_id"]
                latest[account] = (account, json_text(record.value["enrollments"]), record.partition, record.offset)
        if latest:
            rows = list(latest.values())
            await self.write(lambda connection: connection.execute(
                "INSERT INTO vtn_accounts AS stored (service_account_id, enrollments, source_partition, source_offset)"
                " SELECT a, e::jsonb, p, o FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[])"
                " AS batch (a, e, p, o)"
                " ON CONFLICT (service_account_id) DO UPDATE SET enrollments = excluded.enrollments,"
                " source_partition = excluded.source_partition, source_offset = excluded.source_offset"
                " WHERE stored.source_offset < excluded.source_offset", *db.columns(rows)))

    async def provider_accounts(self, provider_id: str) -> list[tuple[str, list[dict]]]:
        """(service_account_id, enrollments) of every account with a period of the provider."""
        pool = await self.pool()
        rows = await pool.fetch("SELECT service_account_id, enrollments FROM vtn_accounts"
                                " WHERE enrollments @> $1::jsonb ORDER BY service_account_id",
                                [{"provider_id": provider_id}])
        return [(row["service_account_id"], row["enrollments"]) for row in rows]

    # -- reports and subscriptions ---------------------------------------------------------------------

    async def add_report(self, client_id: str, event: StoredEvent, body: dict, at: datetime) -> dict:
        report_id = f"rpt-{uuid.uuid4().hex[:20]}"
        pool = await self.pool()
        await pool.execute("INSERT INTO vtn_reports (report_id, client_id, event_id, program_id, body, created_at,"
                           " modified_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                           report_id, client_id, event.event_id, event.program_id, body, at)
        return {"id": report_id, "client_id": client_id, "body": body, "created_at": at, "modified_at": at}

    async def reports(self, client_id: str | None, report_id: str | None = None, *, program_id: str | None = None,
                      event_id: str | None = None, client_name: str | None = None) -> list[dict]:
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT report_id AS id, client_id, body, created_at, modified_at FROM vtn_reports"
            " WHERE ($1::text IS NULL OR client_id = $1) AND ($2::text IS NULL OR report_id = $2)"
            " AND ($3::text IS NULL OR program_id = $3) AND ($4::text IS NULL OR event_id = $4)"
            " AND ($5::text IS NULL OR body ->> 'clientName' = $5)"
            " ORDER BY created_at, report_id", client_id, report_id, program_id, event_id, client_name)
        return [dict(row) for row in rows]

    async def add_subscription(self, caller: Caller, body: dict, at: datetime) -> dict:
        subscription_id = f"sub-{uuid.uuid4().hex[:20]}"
        pool = await self.pool()
        await pool.execute(
            "INSERT INTO vtn_subscriptions (subscription_id, client_id, role, body, created_at, modified_at)"
            " VALUES ($1, $2, $3, $4, $5, $5)", subscription_id, caller.client_id, caller.role, body, at)
        return {"id": subscription_id, "client_id": caller.client_id, "body": body, "created_at": at,
                "modified_at": at}

    async def subscriptions(self, client_id: str | None, subscription_id: str | None = None) -> list[dict]:
        pool = await self.pool()
        rows = await pool.fetch(
            "SELECT subscription_id AS id, client_id, body, created_at, modified_at FROM vtn_subscriptions"
            " WHERE ($1::text IS NULL OR client_id = $1) AND ($2::text IS NULL OR subscription_id = $2)"
            " ORDER BY created_at, subscription_id", client_id, subscription_id)
        return [dict(row) for row in rows]

    async def change_subscription(self, subscription_id: str, body: dict, at: datetime) -> None:
        pool = await self.pool()
        await pool.execute("UPDATE vtn_subscriptions SET body = $2, modified_at = $3 WHERE subscription_id = $1",
                           subscription_id, body, at)

    async def delete_subscription(self, subscription_id: str) -> None:
        pool = await self.pool()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM vtn_subscriptions WHERE subscription_id = $1", subscription_id)
            await connection.execute("DELETE FROM vtn_notifications WHERE subscription_id = $1 AND state = 'PENDING'",
                                     subscription_id)

    # -- the webhook outbox ------------------------------------------------------------------------------

    async def claim_notifications(self, limit: int, lease: timedelta) -> list[asyncpg.Record]:
        """Due notifications, leased to this worker (another worker skips them until the lease ends)."""
        pool = await self.pool()
        return await pool.fetch(
            "UPDATE vtn_notifications SET next_attempt_at = now() + $2 WHERE notification_id IN ("
            " SELECT notification_id FROM vtn_notifications WHERE state = 'PENDING' AND next_attempt_at <= now()"
            " ORDER BY next_attempt_at, notification_id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING notification_id, subscription_id, callback_url, bearer_token, body, attempts, source_topic,"
            " source_partition, source_offset, source_key, source_value", limit, lease)

    async def notification_delivered(self, notification_id: int) -> None:
        pool = await self.pool()
        await pool.execute("UPDATE vtn_notifications SET state = 'DELIVERED', attempts = attempts + 1,"
                           " last_error = NULL WHERE notification_id = $1", notification_id)

    async def notification_failed(self, notification_id: int, error: str, retry_in: timedelta | None) -> None:
        """Another attempt after ``retry_in``, or (None) none: the notification is dead."""
        pool = await self.pool()
        if retry_in is None:
            await pool.execute("UPDATE vtn_notifications SET state = 'DEAD', attempts = attempts + 1, last_error = $2"
                               " WHERE notification_id = $1", notification_id, error)
        else:
            await pool.execute("UPDATE vtn_notifications SET attempts = attempts + 1, last_error = $2,"
                               " next_attempt_at = now() + $3 WHERE notification_id = $1",
                               notification_id, error, retry_in)
