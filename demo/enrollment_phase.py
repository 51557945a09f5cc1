"""The enrollment weeks of the demo, live: the clock ticks to each step, the utility's accounts and
the providers' requests go out (on Kafka, and over the HTTP API with each provider's own token),
and the demo waits until the enrollment service has decided what it should have by then."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from gridflex.calendar import LOCAL_ZONE
from gridflex.kafka_io import RecordProducer
from gridflex.processes import ServiceProcess
from gridflex.settings import ServiceSettings
from gridflex.topics import CUSTOMER_ACCOUNTS, ENROLLMENT_REQUESTS

from demo.driving import DemoFailed, scrape, send_records, tick, wait_for_progress
from demo.enrollment import HTTP, KAFKA, ApiCall, EnrollmentScenario, EnrollmentStep
from demo.enrollment_report import Answer, EnrollmentMetrics
from demo.scenario import Outgoing

STEP_TIMEOUT_S = 60.0  # for the service to decide one step's requests
QUIET_S = 5.0  # … or to show no progress for this long, having made some
API_TIMEOUT_S = 20.0  # for the projection to show an account as the decisions left it


class ProviderApi:
    """The enrollment API as providers call it: each with its own bearer token."""

    def __init__(self, base_url: str, tokens: dict[str, str]):
        self.base_url = base_url
        self.tokens = tokens
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "ProviderApi":
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT_S + 10))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.session.close()

    async def call(self, call: ApiCall) -> Answer:
        headers = {"Authorization": f"Bearer {self.tokens[call.caller]}"} if call.caller else {}
        try:
            async with self.session.request(call.method, self.base_url + call.path, headers=headers,
                                            json=call.body) as response:
                body = await response.json(content_type=None) if await response.read() else None
                return Answer(response.status, body)
        except aiohttp.ClientError as exc:
            raise DemoFailed(f"the enrollment API did not answer {call.method} {call.path}: {exc!r}") from None

    async def call_until_settled(self, call: ApiCall) -> Answer:
        """Ask again until the answer is the expected kind (the projection catches up within a
        second or two), or the time is up; the report judges the last answer."""
        deadline = time.monotonic() + API_TIMEOUT_S
        while True:
            answer = await self.call(call)
            settled = answer.status == call.status and (
                call.periods is None or len(answer.body.get("enrollments", [])) == call.periods)
            if settled or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(0.25)


async def run_enrollment(settings: ServiceSettings, service: ServiceProcess, others: list[ServiceProcess],
                         api: ProviderApi, scenario: EnrollmentScenario) -> tuple[EnrollmentMetrics, list]:
    """Every step of the scenario, then the providers' read-back calls; the service's metrics at
    the end, and every API call with its answer."""
    answers: list[tuple[ApiCall, Answer]] = []
    published = decided = bonus_decisions = 0
    metrics = EnrollmentMetrics()
    print(f"\nthe weeks before: sign-ups for {scenario.program.id} (clock → each step, then its records; "
          "decisions counted so far):\n")
    progress_header(scenario.steps[0].at.astimezone(LOCAL_ZONE).tzname())
    async with RecordProducer(settings) as producer:
        for step in scenario.steps:
            await tick(producer, [service, *others], step.at)
            if step.accounts:
                await send_records(producer, [Outgoing(CUSTOMER_ACCOUNTS, facts["service_account_id"], facts)
                                              for facts in step.accounts])
                published += len(step.accounts)
                metrics = await wait_for(service, lambda m, n=published: m.accounts_read >= n)
            kafka = [case for case in step.requests if case.channel == KAFKA] + step.redeliveries
            await send_records(producer, [
                Outgoing(ENROLLMENT_REQUESTS.format(provider_id=case.provider_id), case.service_account_id,
                         case.request) for case in kafka])
            step_answers = [(call, await api.call(call)) for call in step.calls]
            answers += step_answers
            decided += len(step.decided)
            bonus_decisions += step.bonus_decisions
            if step.requests or step.decided:
                metrics = await wait_for(service, lambda m, n=decided, b=bonus_decisions: (
                    m.decided >= n and m.incentive_decisions >= b and m.settled))
            progress(step, metrics, step_answers)
    for call in scenario.readback:
        answers.append((call, await api.call_until_settled(call)))
    return await scrape(service, EnrollmentMetrics.parse), answers


async def wait_for(service: ServiceProcess, done) -> EnrollmentMetrics:
    """The metrics once ``done`` holds for them, or once the service has gone quiet short of it."""
    return await wait_for_progress(service, EnrollmentMetrics.parse, done, STEP_TIMEOUT_S, QUIET_S,
                                   quiet_once_moved=True)


def progress_header(zone: str) -> None:
    header = (f"  {'step (' + zone + ')':<15}  {'accounts':>8}  {'Kafka':>5}  {'HTTP':>4}  {'decided':>7}  "
              f"{'accepted':>8}  {'rejected':>8}  {'bonus decisions':>15}")
    print(header)
    print("  " + "─" * (len(header) - 2))


def progress(step: EnrollmentStep, m: EnrollmentMetrics, answers: list[tuple[ApiCall, Answer]]) -> None:
    """One line per step: what went out, and the decisions made so far; then what is special."""
    kafka = sum(1 for case in step.requests if case.channel == KAFKA) + len(step.redeliveries)
    http = sum(1 for case in step.requests if case.channel == HTTP)
    print(f"  {step.label:<15}  {len(step.accounts) or '–':>8}  {kafka or '–':>5}  {http or '–':>4}  {m.decided:>7}  "
          f"{m.outcomes('ACCEPTED'):>8}  {m.outcomes('REJECTED'):>8}  {m.incentive_decisions:>15}  {step.what}")
    for case in step.requests:
        if case.kind:
            print(f"  {'':<15}  ↳ {case.kind:<25} {case.provider_id}/{case.service_account_id}: {case.note}")
    for case in step.redeliveries:
        print(f"  {'':<15}  ↳ {'re-delivery':<25} {case.provider_id}/{case.service_account_id}: "
              f"request {case.request['request_id']} again")
    for case in step.decided:
        if case not in step.requests:
            print(f"  {'':<15}  ↳ {'decided now':<25} {case.provider_id}/{case.service_account_id}: {case.kind}, "
                  f"requested {case.request['requested_at'].astimezone(LOCAL_ZONE):%a %m-%d %H:%M}")
    for call, answer in answers:
        who = f"{call.caller}'s token" if call.caller else "no token"
        purpose = call.purpose + (f" for {call.case.service_account_id}" if call.case else "")
        print(f"  {'':<15}  ↳ {'HTTP ' + call.method:<25} {call.path} ({who}) → {answer.status}: {purpose}")
