"""Webhook delivery: the outbox the lifecycle projection fills (storage.vtn_notifications), sent
as the spec's notification object to each subscription's callbackUrl with its bearerToken.

A 2xx answer delivers it. Anything else (an error status, a refused connection, a timeout) is
tried again after the backoff, doubled after each failure up to a ceiling; after the last attempt
the lifecycle record that caused it goes to ``gridflex.dead-letters.v1`` as CALLBACK_FAILED, with
the reason. Several workers share the outbox: each claims rows with a lease (SKIP LOCKED).
Neither the bearer token nor the URL's query string is ever logged or dead-lettered.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
import structlog
from prometheus_client import Counter

from gridflex.db import TRANSIENT_ERRORS
from services.vtn.publisher import Publisher
from services.vtn.settings import VtnSettings
from services.vtn.storage import Database

log = structlog.get_logger(__name__)

NOTIFICATIONS = Counter("gridflex_vtn_notifications", "Webhook notification attempts", ["outcome"])
BATCH = 20


def safe_url(url: str) -> str:
    """The callback URL without credentials, query or fragment: what logs and dead letters show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def backoff(settings: VtnSettings, failures: int) -> timedelta | None:
    """The wait after the ``failures``-th failure, or None when no attempt is left."""
    if failures >= settings.callback_attempts:
        return None
    return timedelta(seconds=min(settings.callback_backoff_s * 2 ** (failures - 1), settings.callback_backoff_max_s))


class Notifier:
    def __init__(self, settings: VtnSettings, database: Database, publisher: Publisher):
        self.settings = settings
        self.database = database
        self.publisher = publisher

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.callback_timeout_s)
        lease = timedelta(seconds=self.settings.callback_timeout_s * 2 + 5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    due = await self.database.claim_notifications(BATCH, lease)
                    await asyncio.gather(*(self._deliver(session, row) for row in due))
                except TRANSIENT_ERRORS as exc:
                    log.warning("webhook outbox unavailable", error=type(exc).__name__)
                    due = []
                if len(due) < BATCH:
                    await asyncio.sleep(self.settings.callback_poll_s)

    async def _deliver(self, session: aiohttp.ClientSession, row) -> None:
        headers = {"Content-Type": "application/json"}
        if row["bearer_token"]:
            headers["Authorization"] = f"Bearer {row['bearer_token']}"
        url = row["callback_url"]
        try:
            async with session.post(url, json=row["body"], headers=headers, allow_redirects=False) as response:
                error = None if 200 <= response.status < 300 else f"answered HTTP {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            error = f"failed: {type(exc).__name__}"
        if error is None:
            await self.database.notification_delivered(row["notification_id"])
            NOTIFICATIONS.labels("delivered").inc()
            return
        failures = row["attempts"] + 1
        retry_in = backoff(self.settings, failures)
        reason = (f"subscription {row['subscription_id']}: POST {safe_url(url)} {error} "
                  f"(attempt {failures} of {self.settings.callback_attempts})")
        if retry_in is None:
            await self.publisher.dead_letter(
                row["source_topic"], row["source_partition"], row["source_offset"], row["source_key"],
                row["source_value"], "CALLBACK_FAILED", reason + "; given up")
            NOTIFICATIONS.labels("dead_lettered").inc()
            log.warning("webhook given up: dead-lettered", subscription_id=row["subscription_id"],
                        callback=safe_url(url), attempts=failures)
        else:
            NOTIFICATIONS.labels("retried").inc()
            log.info("webhook failed; will retry", subscription_id=row["subscription_id"], callback=safe_url(url),
                     attempt=failures, retry_in_s=retry_in.total_seconds(), error=error)
        await self.database.notification_failed(row["notification_id"], reason, retry_in)
