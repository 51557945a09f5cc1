"""What an operator asks of the enrollment service's books: an account's enrollments and the
decisions on it; and reversing a bonus or rebate paid in error.

The reversal travels the same road as every claim: a REVERSE record on
``gridflex.enrollment.incentive-claims.v1``, decided by the ledger in log order (it checks that the
incentive was paid and that the day is inside the program's reversal window). The operator is
told the ledger's answer: the REVERSED incentive decision, or the dead letter with its reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridflex.kafka_io import Codecs, RecordProducer
from gridflex.settings import ServiceSettings
from gridflex.topics import DEAD_LETTERS, INCENTIVE_CLAIMS, INCENTIVES
from services.enrollment.domain.accounts import ClaimId, reversal
from services.enrollment.projection import Database

POLL_MS = 200


async def account_report(settings: ServiceSettings, service_account_id: str) -> list[str] | None:
    """The account's enrollment periods (every provider), lockouts and data-sharing
    authorizations, then every decision on it, newest first; None when nothing is known."""
    database = Database(settings.database_url)
    try:
        pool = await database.pool()
        state = await pool.fetchval("SELECT state FROM enrollment_accounts WHERE service_account_id = $1",
                                    service_account_id)
        decisions = await pool.fetch(
            "SELECT provider_id, request_id, program_id, action, thermostat_serial, outcome, effective_date, failures,"
            " decided_at FROM enrollment_decisions WHERE service_account_id = $1 ORDER BY decided_at DESC, request_id",
            service_account_id)
    finally:
        await database.close()
    if state is None and not decisions:
        return None
    state = state or {}
    report = [f"account {service_account_id}", "  enrollments:"]
    report += [f"    {period['program_id']:<24} {period['provider_id']:<12} thermostat {period['thermostat_serial']}  "
               f"{period['effective_from']} → {period['effective_to'] or 'open'}"
               + (f" ({period['end_reason']})" if period.get("end_reason") else "")
               for period in state.get("enrollments", [])] or ["    none"]
    report += [f"  lockout: {lockout['program_id']} until {lockout['until']} ({lockout['reason']})"
               for lockout in state.get("lockouts", [])]
    report += [f"  authorization {grant['authorization_id']} ({grant['provider_id']}): {grant['status']}"
               + (", re-authorization required" if grant.get("reauthorization_required") else "")
               for grant in state.get("authorizations", [])]
    report.append("  decisions (newest first):")
    for row in decisions:
        effective = f" effective {row['effective_date']}" if row["effective_date"] else ""
        report.append(f"    {row['decided_at'].isoformat()}  {row['provider_id']}/{row['request_id']}  {row['program_id']} "
                      f"{row['action']} {row['thermostat_serial']}: {row['outcome']}{effective}")
        report += [f"      {failure['code']}: {failure['message']}" for failure in row["failures"] or []]
    return report


class ReversalRefused(Exception):
    """The reversal was not sent (no such enrollment), or the ledger refused it (its dead letter)."""


@dataclass(frozen=True)
class Reversed:
    claim_id: str
    amount: str
    fund_remaining: str | None


async def reverse_incentive(settings: ServiceSettings, claim_id: str, reason: str, day: date,
                            wait_s: float) -> Reversed | None:
    """Send a reversal and wait up to ``wait_s`` for the ledger's answer (None: no answer yet)."""
    claim = ClaimId.parse(claim_id)
    database = Database(settings.database_url)
    try:
        decision = await database.decision(claim.provider_id, claim.request_id)
    finally:
        await database.close()
    if decision is None or (decision["service_account_id"], decision["program_id"]) != (
            claim.service_account_id, claim.program_id):
        raise ReversalRefused(f"no enrollment decision matches {claim_id}: provider {claim.provider_id} has no "
                              f"request {claim.request_id} for {claim.service_account_id} in {claim.program_id}")
    record = reversal(claim, decision["thermostat_serial"], day, reason, datetime.now(timezone.utc))
    codecs = Codecs(settings)
    async with _Answers(settings, codecs) as answers, RecordProducer(settings) as producer:
        await (await producer.send(INCENTIVE_CLAIMS, claim.program_id, record))
        sent = codecs.for_topic(INCENTIVE_CLAIMS).encode(record)
        return await answers.wait(str(claim), sent, wait_s)


class _Answers:
    """The incentive decisions and dead letters that appear from now on."""

    def __init__(self, settings: ServiceSettings, codecs: Codecs):
        self.codecs = codecs
        self.incentives = codecs.topic_name(INCENTIVES)
        self.claims = codecs.topic_name(INCENTIVE_CLAIMS)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> "_Answers":
        await self.consumer.start()
        partitions = [TopicPartition(self.codecs.topic_name(topic), p) for topic in (INCENTIVES, DEAD_LETTERS)
                      for p in range(self.codecs.catalogue.spec(topic).partitions)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)  # fix the end now, before the reversal is sent
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.consumer.stop()

    async def wait(self, claim_id: str, sent: bytes, wait_s: float) -> Reversed | None:
        decode_incentive = self.codecs.for_topic(INCENTIVES).decode
        decode_dead_letter = self.codecs.for_topic(DEAD_LETTERS).decode
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            fetched = await self.consumer.getmany(timeout_ms=POLL_MS)
            for tp, messages in fetched.items():
                for message in messages:
                    if tp.topic == self.incentives:
                        value = decode_incentive(message.value)
                        if isinstance(value, dict) and value["claim_id"] == claim_id and value["outcome"] == "REVERSED":
                            return Reversed(claim_id, str(value["amount"]), _text(value["fund_remaining"]))
                    else:
                        value = decode_dead_letter(message.value)
                        if isinstance(value, dict) and value["source_topic"] == self.claims and value["value"] == sent:
                            raise ReversalRefused(f"{value['reason_code']}: {value['reason']}")
            await asyncio.sleep(0)
        return None


def _text(amount) -> str | None:
    return None if amount is None else str(amount)
