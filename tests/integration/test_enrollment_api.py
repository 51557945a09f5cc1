"""The enrollment API against the real broker and Postgres: credentials, submissions produced on
the provider's own topic, refusals, and each provider seeing only its own decisions and periods.

One enrollment worker serves the module on its own topics. Postgres is shared by every run, so
each test uses its own request ids, accounts and thermostats. Decisions and account states are
published here as the decision pipeline would publish them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from gridflex.processes import free_port
from gridflex.topics import DEAD_LETTERS, ENROLLMENT_DECISIONS, ENROLLMENT_REQUESTS, ENROLLMENT_STATE
from services.enrollment.projection import Database
from tests.integration.conftest import IsolatedSystem, utc

NOW = utc(2026, 7, 15, 21, 0)
PROVIDERS = ("energyhub", "resideo")
PROGRAM = "sce-sep-2025"  # open to both providers


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


@dataclass
class EnrollmentApi:
    system: IsolatedSystem
    port: int
    tokens: dict[str, str]

    async def call(self, method: str, path: str, as_provider: str | None = None, token: str | None = None,
                   **options: Any) -> Answer:
        token = token or (self.tokens[as_provider] if as_provider else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as session:
            async with session.request(method, f"http://127.0.0.1:{self.port}{path}", headers=headers,
                                       **options) as response:
                body = await response.json(content_type=None) if await response.read() else None
                return Answer(response.status, body, response.headers)

    async def submit(self, provider: str, body: dict, path_provider: str | None = None) -> Answer:
        return await self.call("POST", f"/v1/providers/{path_provider or provider}/enrollment-requests",
                               provider, json=body)

    async def until(self, path: str, provider: str, done, timeout: float = 45.0) -> Answer:
        """GET ``path`` until ``done(answer)``, or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            answer = await self.call("GET", path, provider)
            if done(answer) or time.monotonic() > deadline:
                return answer
            await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def enrollment(running_stack):
    system = IsolatedSystem("enrollment-api", PROVIDERS)
    await system.create_topics()
    await system.tick(NOW)
    # Tokens are minted the way `gridflex partner credential` mints them.
    database = Database(system.settings.database_url)
    tokens = {provider: await database.mint_credential(provider) for provider in PROVIDERS}
    await database.close()
    service = system.service("enrollment").start()
    yield EnrollmentApi(system, service.web_port, tokens)
    system.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def a_request(**changes) -> dict:
    body = {
        "request_id": unique("req"), "program_id": PROGRAM, "action": "ENROLL",
        "service_account_id": unique("SA"), "thermostat_serial": unique("T"), "thermostat_model": "Ecobee3 lite",
        "controls_central_ac": True, "thermostat_source": "RETAIL", "requested_at": "2026-07-15T14:00:00-07:00",
    }
    return {**body, **changes}


def a_decision(provider: str, request: dict, outcome: str = "ACCEPTED", **changes) -> dict:
    decision = {
        "request_id": request["request_id"], "provider_id": provider, "program_id": request["program_id"],
        "action": request["action"], "service_account_id": request["service_account_id"],
        "thermostat_serial": request["thermostat_serial"], "outcome": outcome,
        "effective_date": date(2026, 7, 20) if outcome == "ACCEPTED" else None,
        "failures": [] if outcome == "ACCEPTED" else [
            {"code": "LOCKED_OUT", "message": "The account is locked out of this program until 2026-12-31."}],
        "lockout_until": None if outcome == "ACCEPTED" else date(2026, 12, 31),
        "requested_at": utc(2026, 7, 15, 21, 0), "decided_at": utc(2026, 7, 15, 21, 0, 5),
    }
    return {**decision, **changes}


def a_period(provider: str, serial: str, request_id: str, start: date, end: date | None = None) -> dict:
    return {"program_id": PROGRAM, "provider_id": provider, "thermostat_serial": serial, "request_id": request_id,
            "effective_from": start, "effective_to": end, "end_reason": "DISENROLLED" if end else None}


async def publish_decisions(system: IsolatedSystem, *decisions: dict) -> None:
    async with system.producer() as producer:
        for decision in decisions:
            topic = ENROLLMENT_DECISIONS.format(provider_id=decision["provider_id"])
            await producer.send(topic, decision["service_account_id"], decision)


async def publish_state(system: IsolatedSystem, *states: dict) -> None:
    async with system.producer() as producer:
        for state in states:
            await producer.send(ENROLLMENT_STATE, state["service_account_id"], state)


def status_path(provider: str, request_id: str) -> str:
    return f"/v1/providers/{provider}/enrollment-requests/{request_id}"


# -- submitting ----------------------------------------------------------------------------------


async def test_a_submitted_request_is_produced_on_the_providers_own_topic(enrollment):
    request = a_request()
    # EnergyHub submits over HTTP and is told where to look for the decision.
    answer = await enrollment.submit("energyhub", request)
    assert answer.status == 202
    assert answer.body == {"request_id": request["request_id"],
                           "status_url": status_path("energyhub", request["request_id"])}
    # The request is on partner.energyhub.enrollment-requests.v1, keyed by the account, as if
    # EnergyHub had sent it on Kafka.
    records = await enrollment.system.read(ENROLLMENT_REQUESTS.format(provider_id="energyhub"), idle_timeout=1.0)
    [produced] = [r for r in records if r.value["request_id"] == request["request_id"]]
    assert produced.key == request["service_account_id"]
    assert produced.value == {**request, "requested_at": utc(2026, 7, 15, 21, 0)}
    # Nothing has decided it yet.
    pending = await enrollment.call("GET", status_path("energyhub", request["request_id"]), "energyhub")
    assert (pending.status, pending.body["status"]) == (202, "PENDING")


async def test_a_request_without_id_or_time_gets_a_uuid_and_the_clocks_time(enrollment):
    request = {k: v for k, v in a_request().items() if k not in ("request_id", "requested_at")}
    answer = await enrollment.submit("resideo", request)
    assert answer.status == 202
    request_id = answer.body["request_id"]
    assert uuid.UUID(request_id).version == 4
    records = await enrollment.system.read(ENROLLMENT_REQUESTS.format(provider_id="resideo"), idle_timeout=1.0)
    [produced] = [r.value for r in records if r.value["request_id"] == request_id]
    assert produced["requested_at"] == NOW  # the simulated clock's latest tick


async def test_a_repost_is_accepted_again_and_a_different_request_under_its_id_is_refused(enrollment):
    request = a_request()
    first = await enrollment.submit("energyhub", request)
    # The same request again (its instant written in another zone) is the same submission.
    again = await enrollment.submit("energyhub", {**request, "requested_at": "2026-07-15T21:00:00Z"})
    assert (first.status, again.status) == (202, 202)
    assert again.body == first.body
    # Another request under the same id is a conflict, with a reason.
    conflicting = await enrollment.submit("energyhub", {**request, "action": "DISENROLL"})
    assert conflicting.status == 409
    assert request["request_id"] in conflicting.body["reason"]
    # Whatever was sent for this id is the one request, unchanged.
    records = await enrollment.system.read(ENROLLMENT_REQUESTS.format(provider_id="energyhub"), idle_timeout=1.0)
    sent = [r.value for r in records if r.value["request_id"] == request["request_id"]]
    assert sent and all(value["action"] == "ENROLL" for value in sent)
    assert all(value == sent[0] for value in sent)


async def test_a_bad_body_is_refused_with_every_problem(enrollment):
    answer = await enrollment.submit("energyhub", {
        "request_id": "ok-1", "program_id": PROGRAM, "action": "PAUSE", "service_account_id": "SA-1",
        "thermostat_serial": "T-1", "controls_central_ac": "yes", "thermostat_source": "RETAIL",
    })
    assert answer.status == 422
    assert answer.body == {"errors": [
        {"field": "action", "problem": "must be one of ENROLL, DISENROLL"},
        {"field": "thermostat_model", "problem": "is required"},
        {"field": "controls_central_ac", "problem": "must be true or false"},
    ]}
    # Not JSON at all is a 400.
    garbage = await enrollment.call("POST", "/v1/providers/energyhub/enrollment-requests", "energyhub",
                                    data=b"{not json")
    assert (garbage.status, garbage.body["error"]) == (400, "invalid_json")


# -- who may call --------------------------------------------------------------------------------


async def test_without_a_valid_token_the_api_answers_401(enrollment):
    path = "/v1/providers/energyhub/accounts/SA-1"
    missing = await enrollment.call("GET", path)
    wrong = await enrollment.call("GET", path, token="not-a-token")
    assert (missing.status, wrong.status) == (401, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    # A revoked token stops working at once.
    provider = unique("revoked")
    database = Database(enrollment.system.settings.database_url)
    token = await database.mint_credential(provider)
    before = await enrollment.call("GET", f"/v1/providers/{provider}/accounts/SA-1", token=token)
    assert await database.revoke_credentials(provider) == 1
    await database.close()
    after = await enrollment.call("GET", f"/v1/providers/{provider}/accounts/SA-1", token=token)
    assert (before.status, after.status) == (404, 401)


async def test_a_token_cannot_act_for_another_provider(enrollment):
    request = a_request()
    submitted = await enrollment.submit("resideo", request, path_provider="energyhub")
    read = await enrollment.call("GET", f"/v1/providers/energyhub/accounts/{request['service_account_id']}",
                                 "resideo")
    assert (submitted.status, read.status) == (403, 403)
    assert "resideo" in submitted.body["reason"] and "energyhub" in submitted.body["reason"]
    # Nothing reached EnergyHub's topic.
    records = await enrollment.system.read(ENROLLMENT_REQUESTS.format(provider_id="energyhub"), idle_timeout=1.0)
    assert not [r for r in records if r.value["request_id"] == request["request_id"]]


async def test_the_openapi_document_is_served_without_a_token(enrollment):
    answer = await enrollment.call("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.body["openapi"].startswith("3.1")
    assert "/v1/providers/{provider_id}/enrollment-requests" in answer.body["paths"]


# -- reading decisions and enrollments -----------------------------------------------------------


async def test_the_decision_on_a_request_is_served_once_projected_and_the_first_decision_stands(enrollment):
    request = a_request()
    assert (await enrollment.submit("energyhub", request)).status == 202
    # The decision pipeline accepts it; a re-delivered, different decision must not replace it.
    marker = a_request(service_account_id=request["service_account_id"])
    await publish_decisions(
        enrollment.system,
        a_decision("energyhub", request, "ACCEPTED"),
        a_decision("energyhub", request, "REJECTED"),
        a_decision("energyhub", marker, "ACCEPTED"),  # same partition, after both
    )
    # Waiting up to 20 s, EnergyHub gets the decision as soon as it is projected.
    decided = await enrollment.call("GET", status_path("energyhub", request["request_id"]) + "?wait=20", "energyhub")
    assert decided.status == 200
    assert decided.body == {
        "status": "DECIDED", "request_id": request["request_id"], "program_id": PROGRAM, "action": "ENROLL",
        "service_account_id": request["service_account_id"], "thermostat_serial": request["thermostat_serial"],
        "outcome": "ACCEPTED", "effective_date": "2026-07-20", "failures": [], "lockout_until": None,
        "requested_at": "2026-07-15T21:00:00.000Z", "decided_at": "2026-07-15T21:00:05.000Z",
    }
    await enrollment.until(status_path("energyhub", marker["request_id"]), "energyhub", lambda a: a.status == 200)
    again = await enrollment.call("GET", status_path("energyhub", request["request_id"]), "energyhub")
    assert again.body["outcome"] == "ACCEPTED"
    # Request ids are each provider's own: Resideo has no such request.
    other = await enrollment.call("GET", status_path("resideo", request["request_id"]), "resideo")
    assert other.status == 404


async def test_each_provider_sees_only_its_own_periods_and_decisions_on_a_shared_account(enrollment):
    account = unique("SA")
    energyhub_request = a_request(service_account_id=account)
    resideo_request = a_request(service_account_id=account)
    energyhub_serial, resideo_serial = energyhub_request["thermostat_serial"], resideo_request["thermostat_serial"]
    # EnergyHub's thermostat was enrolled in June and disenrolled; Resideo's took over in July.
    await publish_decisions(
        enrollment.system,
        a_decision("energyhub", energyhub_request, effective_date=date(2026, 6, 1),
                   decided_at=utc(2026, 5, 28, 12)),
        a_decision("resideo", resideo_request, effective_date=date(2026, 7, 2), decided_at=utc(2026, 6, 29, 12)),
    )
    earlier = {
        "service_account_id": account,
        "enrollments": [a_period("energyhub", energyhub_serial, energyhub_request["request_id"], date(2026, 6, 1))],
        "lockouts": [], "authorizations": [], "updated_at": utc(2026, 6, 1),
    }
    latest = {
        **earlier,
        "enrollments": [
            a_period("energyhub", energyhub_serial, energyhub_request["request_id"], date(2026, 6, 1),
                     date(2026, 7, 1)),
            a_period("resideo", resideo_serial, resideo_request["request_id"], date(2026, 7, 2)),
        ],
        "lockouts": [{"program_id": PROGRAM, "until": date(2026, 12, 31), "reason": "DISENROLLED"}],
        "updated_at": utc(2026, 7, 2),
    }
    await publish_state(enrollment.system, earlier, latest)

    energyhub = await enrollment.until(
        f"/v1/providers/energyhub/accounts/{account}", "energyhub",
        lambda a: a.status == 200 and a.body["lockouts"],
    )
    assert energyhub.status == 200
    assert energyhub.body["enrollments"] == [{
        "program_id": PROGRAM, "provider_id": "energyhub", "thermostat_serial": energyhub_serial,
        "request_id": energyhub_request["request_id"], "effective_from": "2026-06-01", "effective_to": "2026-07-01",
        "end_reason": "DISENROLLED",
    }]
    assert energyhub.body["lockouts"] == [{"program_id": PROGRAM, "until": "2026-12-31", "reason": "DISENROLLED"}]
    assert [d["request_id"] for d in energyhub.body["decisions"]] == [energyhub_request["request_id"]]

    resideo = await enrollment.call("GET", f"/v1/providers/resideo/accounts/{account}", "resideo")
    assert [p["provider_id"] for p in resideo.body["enrollments"]] == ["resideo"]
    assert [d["request_id"] for d in resideo.body["decisions"]] == [resideo_request["request_id"]]

    # By thermostat: each provider finds its own, and nothing of the other's.
    own = await enrollment.until(f"/v1/providers/resideo/thermostats/{resideo_serial}", "resideo",
                                 lambda a: a.status == 200)
    assert [(p["service_account_id"], p["effective_from"]) for p in own.body["enrollments"]] == [
        (account, "2026-07-02")]
    assert [d["request_id"] for d in own.body["decisions"]] == [resideo_request["request_id"]]
    foreign = await enrollment.call("GET", f"/v1/providers/energyhub/thermostats/{resideo_serial}", "energyhub")
    assert foreign.status == 404


async def test_an_account_without_anything_of_the_caller_is_not_found(enrollment):
    account = unique("SA")
    others = a_request(service_account_id=account)
    await publish_state(enrollment.system, {
        "service_account_id": account,
        "enrollments": [a_period("resideo", others["thermostat_serial"], others["request_id"], date(2026, 7, 2))],
        "lockouts": [], "authorizations": [], "updated_at": utc(2026, 7, 2),
    })
    await enrollment.until(f"/v1/providers/resideo/accounts/{account}", "resideo", lambda a: a.status == 200)
    answer = await enrollment.call("GET", f"/v1/providers/energyhub/accounts/{account}", "energyhub")
    assert answer.status == 404


async def test_an_undecodable_decision_goes_to_dead_letters(enrollment):
    key = unique("SA").encode()
    async with enrollment.system.producer() as producer:
        await producer.send_bytes(ENROLLMENT_DECISIONS.format(provider_id="energyhub"), key, b"not avro")
    deadline = time.monotonic() + 30
    letters = []
    while not letters and time.monotonic() < deadline:
        letters = [r.value for r in await enrollment.system.read(DEAD_LETTERS, idle_timeout=0.5) if r.value["key"] == key]
    assert [(letter["service"], letter["reason_code"]) for letter in letters] == [("enrollment", "UNDECODABLE")]


# -- Postgres outage -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tcp_proxy(listen_port: int, target_port: int):
    """Postgres reachable on ``listen_port`` while the context lasts (refused before it)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def forward(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                             return_exceptions=True)

    server = await asyncio.start_server(forward, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()


async def test_while_postgres_is_down_batches_wait_and_the_api_answers_503(isolated_system_factory, running_stack):
    system = isolated_system_factory("enrollment-outage", providers=("energyhub",))
    await system.create_topics()
    await system.tick(NOW)
    database = Database(running_stack.database_url)
    token = await database.mint_credential("energyhub")
    # The worker's Postgres is a port where nothing listens yet.
    port = free_port()
    database_url = urlsplit(running_stack.database_url)._replace(netloc=f"gridflex:gridflex@127.0.0.1:{port}").geturl()
    service = system.service("enrollment", GRIDFLEX_DATABASE_URL=database_url).start()
    api = EnrollmentApi(system, service.web_port, {"energyhub": token})

    # A decision arrives; the projection cannot write it and keeps retrying the batch.
    request = a_request()
    await publish_decisions(system, a_decision("energyhub", request))
    deadline = time.monotonic() + 30
    while "postgres unavailable; retrying the batch" not in service.log_path.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert "postgres unavailable; retrying the batch" in service.log_path.read_text()
    # The API cannot check tokens meanwhile: 503, try again later.
    unavailable = await api.call("GET", status_path("energyhub", request["request_id"]), "energyhub")
    assert unavailable.status == 503 and unavailable.headers["Retry-After"]

    # Postgres comes back: the same batch is written, nothing was dropped.
    async with tcp_proxy(port, urlsplit(running_stack.database_url).port):
        decided = await api.call("GET", status_path("energyhub", request["request_id"]) + "?wait=30", "energyhub")
        service.stop()
    await database.close()
    assert (decided.status, decided.body["outcome"]) == (200, "ACCEPTED")


async def test_the_service_logs_json_lines_with_domain_ids_and_never_a_token(enrollment):
    # Runs after the module's other tests: requests accepted, refused for another provider's
    # path, with wrong and revoked tokens.
    [service] = enrollment.system.services
    lines = service.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "event", "service"} <= record.keys() for record in records)
    submitted = [record for record in records if record["event"] == "enrollment request submitted"]
    assert submitted and all(record["provider_id"] in PROVIDERS and record["request_id"] for record in submitted)
    refused = [record for record in records if record["event"] == "request refused: another provider's path"]
    assert refused and refused[0]["provider_id"] == "energyhub"
    text = "\n".join(lines)
    assert not [provider for provider, token in enrollment.tokens.items() if token in text]
    assert "Bearer" not in text and "not-a-token" not in text
