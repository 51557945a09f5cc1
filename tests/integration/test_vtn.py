"""The OpenADR 3.1 VTN against the real broker, Postgres and dispatch service, driven by an
OpenADR 3 client library from PyPI (``openadr3``, grid-coordination/python-oa3) acting as the
utility's business logic and as two providers' VENs. Every response the library receives is
validated against the VTN's OpenAPI document (openadr3.yaml's schemas) with openapi-core.

One system serves the module: its own topics and Postgres schema, a dispatch worker, a VTN
worker, and a webhook receiver in the test process. The simulated clock stands on Monday
2025-07-14; events are on later days.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import date, datetime

import httpx
import openadr3
import pytest
from aiohttp import web
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from gridflex.processes import ServiceProcess, free_port
from gridflex.topics import CUSTOMER_ACCOUNTS, DEAD_LETTERS, ENROLLMENT_STATE
from services.vtn import spec
from tests.integration.conftest import IsolatedSystem, customer_account, new_id, utc

NOW = utc(2025, 7, 14, 16)  # Monday 09:00 in Los Angeles
PROVIDERS = ("energyhub", "resideo")
OPENAPI = OpenAPI.from_dict(spec.served_copy())


class Webhooks:
    """A subscriber's callback endpoint: records what arrives; ``/broken`` always answers 500."""

    def __init__(self):
        self.received: list[tuple[str, str | None, dict]] = []  # (path, Authorization, body)
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.received.append((request.path, request.headers.get("Authorization"), await request.json()))
            return web.Response(status=500 if request.path == "/broken" else 200)

        app = web.Application()
        app.router.add_post("/{tail:.*}", receive)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for(self, path: str, count: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [body for p, _, body in self.received if p == path]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.1)
        return [body for p, _, body in self.received if p == path]


def validated(response: httpx.Response) -> None:
    """httpx response hook: the response must be what openadr3.yaml (as served) says."""
    response.read()
    request = response.request
    query = {}
    for key, value in request.url.params.multi_items():
        query.setdefault(key, []).append(value)
    mock_request = MockRequest(f"{request.url.scheme}://{request.url.netloc.decode()}", request.method.lower(),
                               request.url.path, args={k: v if len(v) > 1 else v[0] for k, v in query.items()},
                               data=request.content, content_type=request.headers.get("content-type",
                                                                                       "application/json"))
    mock_response = MockResponse(response.content, status_code=response.status_code,
                                 headers=dict(response.headers),
                                 content_type=response.headers.get("content-type", "").split(";")[0])
    OPENAPI.validate_response(mock_request, mock_response)


def library_client(base_url: str, token: str, kind: str) -> openadr3.OpenADRClient:
    client = (openadr3.create_bl_client if kind == "BL" else openadr3.create_ven_client)(base_url=base_url, token=token)
    client._http.event_hooks["response"].append(validated)  # the library's own httpx client
    return client


class Vtn:
    def __init__(self, system: IsolatedSystem, process: ServiceProcess, webhooks: Webhooks, secrets: dict[str, str]):
        self.system = system
        self.process = process
        self.webhooks = webhooks
        self.secrets = secrets
        self.base_url = f"http://127.0.0.1:{process.web_port}"

    def token(self, client_id: str, scopes: list[str] | None = None) -> str:
        return openadr3.fetch_token(self.base_url, client_id, self.secrets[client_id], scopes)

    def client(self, client_id: str) -> openadr3.OpenADRClient:
        return library_client(self.base_url, self.token(client_id), "BL" if client_id == "utility" else "VEN")

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, event_hooks={"response": [validated]})


async def register(system: IsolatedSystem, kind: str, client_id: str) -> str:
    """`gridflex vtn client add-… <id>` (the click group the operator command will mount): the secret."""
    code, out, err = await system.command("vtn", "client", f"add-{kind}", client_id)
    assert code == 0, err
    return re.search(r"^client_secret: (\S+)$", out, re.MULTILINE)[1]


async def start_vtn(system: IsolatedSystem, **env: str) -> Vtn:
    webhooks = Webhooks()
    await webhooks.start()
    secrets = {"utility": await register(system, "bl", "utility")}
    for provider in PROVIDERS:
        secrets[provider] = await register(system, "ven", provider)
    process = system.service("vtn", GRIDFLEX_VTN_CALLBACK_BACKOFF_S="0.2", GRIDFLEX_VTN_CALLBACK_ATTEMPTS="3",
                             GRIDFLEX_VTN_CALLBACK_POLL_S="0.1", **env)
    await asyncio.to_thread(process.start)
    return Vtn(system, process, webhooks, secrets)


def period(provider: str, serial: str, effective_from: date) -> dict:
    return {"program_id": "sce-sep-2025", "provider_id": provider, "thermostat_serial": serial,
            "request_id": new_id("R"), "effective_from": effective_from, "effective_to": None, "end_reason": None}


async def enroll(system: IsolatedSystem, account_id: str, *periods: dict) -> None:
    state = {"service_account_id": account_id, "enrollments": list(periods), "lockouts": [], "authorizations": [],
             "updated_at": NOW}
    await system.publish((CUSTOMER_ACCOUNTS, account_id, customer_account(account_id)),
                         (ENROLLMENT_STATE, account_id, state))


@pytest.fixture(scope="module")
async def vtn(running_stack):
    system = IsolatedSystem("vtn", PROVIDERS)
    await system.create_topics()
    await system.tick(NOW)
    await asyncio.to_thread(system.service("dispatch").start)
    running = await start_vtn(system)
    yield running
    system.stop()
    await running.webhooks.runner.cleanup()


def event_body(start: datetime, hours: int, offset: int = 3, **fields) -> dict:
    return {
        "programID": "sce-sep-2025", "eventName": "heat wave",
        "intervalPeriod": {"start": start.isoformat().replace("+00:00", "Z"), "duration": f"PT{hours}H"},
        "intervals": [{"id": 0, "payloads": [{"type": "CONTROL_SETPOINT", "values": [offset]},
                                             {"type": "SIMPLE", "values": [2]}]}],
        **fields,
    }


def subscription(webhooks: Webhooks, path: str, client_name: str) -> dict:
    return {"clientName": client_name, "objectOperations": [
        {"objects": ["EVENT"], "operations": ["CREATE", "UPDATE", "DELETE"], "callbackUrl": webhooks.url(path),
         "bearerToken": f"{client_name}-hook-token"}]}


async def in_thread(function, *args):
    return await asyncio.to_thread(function, *args)


async def test_an_event_from_business_logic_reaches_its_ven_which_reports_and_is_notified(vtn):
    system = vtn.system
    account, serial = new_id("SA"), new_id("T")
    await enroll(system, account, period("energyhub", serial, date(2025, 7, 1)))
    utility, energyhub, resideo = [await in_thread(vtn.client, name) for name in ("utility", "energyhub", "resideo")]

    # The VEN subscribes to events (its webhook gets its own bearer token back).
    created = await in_thread(energyhub.create_subscription, subscription(vtn.webhooks, "/energyhub", "energyhub"))
    assert created.status_code == 201, created.text
    assert created.json()["clientID"] == "energyhub"

    # Business logic schedules an event for energyhub only: dispatch accepts it, the VTN answers 201.
    start = utc(2025, 7, 16, 22)
    answer = await in_thread(utility.create_event, event_body(start, 3, targets=["energyhub"]))
    assert answer.status_code == 201, answer.text
    event = openadr3.coerce(answer.json())
    assert (event.program_id, event.event_name, event.targets) == ("sce-sep-2025", "heat wave", ["energyhub"])
    event_id = event.id

    # The VEN sees it, with the setpoint offset and shed level; the other provider does not.
    listed = await in_thread(energyhub.get_events, )
    assert [e["id"] for e in listed.json()] == [event_id]
    payloads = {p["type"]: p["values"] for p in listed.json()[0]["intervals"][-1]["payloads"]}
    assert (payloads["CONTROL_SETPOINT"], payloads["SIMPLE"], payloads["X_GRIDFLEX_EVENT_REASON"]) == (
        [3], [2], ["GRID_STRESS"])
    assert (await in_thread(resideo.get_events, )).json() == []
    assert (await in_thread(resideo.get_event_by_id, event_id)).status_code == 404

    # The webhook: the spec's notification object, with the subscriber's bearer token.
    [notification] = await vtn.webhooks.wait_for("/energyhub", 1)
    assert spec.problems("notification", notification) == []
    assert (notification["operation"], notification["object"]["id"]) == ("CREATE", event_id)
    assert {auth for path, auth, _ in vtn.webhooks.received if path == "/energyhub"} == {"Bearer energyhub-hook-token"}

    # The VEN's resources are its enrolled thermostats; it reports on one during the event.
    resources = (await in_thread(energyhub.get_resources, )).json()
    assert [r["resourceName"] for r in resources] == [serial]
    report = {"eventID": event_id, "clientName": "energyhub-ven", "resources": [{
        "resourceName": serial, "intervalPeriod": {"start": "2025-07-16T22:05:00Z", "duration": "PT5M"},
        "intervals": [{"id": 0, "payloads": [
            {"type": "OPERATING_STATE", "values": ["RUNNING_CURTAILED"]},
            {"type": "X_GRIDFLEX_HVAC_MODE", "values": ["COOL"]}, {"type": "SETPOINT", "values": [79]},
            {"type": "X_GRIDFLEX_DISPATCH_ACK", "values": ["ACCEPTED"]}, {"type": "USAGE", "values": [0.4]}]}]}]}
    posted = await in_thread(energyhub.create_report, report)
    assert posted.status_code == 201, posted.text
    assert posted.json()["clientID"] == "energyhub"

    # It is the provider's telemetry, on the provider's own topics.
    states = [r.value for r in await system.read("partner.energyhub.thermostat-state.v1", idle_timeout=1)]
    acks = [r.value for r in await system.read("partner.energyhub.dispatch-acks.v1", idle_timeout=1)]
    assert [(s["thermostat_serial"], s["service_account_id"], s["event_id"], s["cool_setpoint_f"], s["online"])
            for s in states] == [(serial, account, event_id, 79.0, True)]
    assert [(a["event_id"], a["thermostat_serial"], a["status"]) for a in acks] == [(event_id, serial, "ACCEPTED")]

    # Another provider cannot read that report, nor report on energyhub's thermostat.
    assert (await in_thread(resideo.get_report_by_id, posted.json()["id"])).status_code == 404
    stolen = await in_thread(resideo.create_report, {**report, "eventID": event_id})
    assert stolen.status_code == 400 and "not an event addressed to you" in stolen.json()["detail"]

    # Business logic shortens it (UPDATE), then cancels it (DELETE): the VEN hears both.
    shorter = await in_thread(utility.update_event, event_id, event_body(start, 2, targets=["energyhub"]))
    assert shorter.status_code == 200, shorter.text
    assert shorter.json()["intervalPeriod"] == {"start": "2025-07-16T22:00:00.000Z", "duration": "PT2H"}
    deleted = await in_thread(utility.delete_event, event_id)
    assert deleted.status_code == 200, deleted.text
    notes = await vtn.webhooks.wait_for("/energyhub", 3)
    assert [(n["operation"], n["object"]["intervalPeriod"]["duration"]) for n in notes] == [
        ("CREATE", "PT3H"), ("UPDATE", "PT2H"), ("DELETE", "PT2H")]
    assert (await in_thread(utility.get_event_by_id, event_id)).status_code == 404


async def test_a_rejected_event_answers_every_broken_rule_and_nothing_is_created(vtn):
    utility = await in_thread(vtn.client, "utility")
    # 7 h at +6 °F on a sce-sep-2025 day: over the 4 °F offset and the 6 h duration and day limits.
    answer = await in_thread(utility.create_event, event_body(utc(2025, 7, 17, 16), 7, offset=6))
    assert answer.status_code == 409, answer.text
    problem = answer.json()
    assert {f["code"] for f in problem["failures"]} == {"SETPOINT_OFFSET", "DURATION", "DAY_LIMIT"}
    assert "SETPOINT_OFFSET: setpoint offset 6 °F is not between 1 and 4 °F" in problem["detail"]
    event_id = problem["instance"].rsplit("/", 1)[1]
    assert (await in_thread(utility.get_event_by_id, event_id)).status_code == 404

    # Input gridflex cannot map is refused before dispatch, with the reason.
    with vtn.http(await in_thread(vtn.token, "utility")) as http:
        bad = await in_thread(lambda: http.post("/events", json={"programID": "sce-sep-2025", "intervals": [
            {"id": 0, "intervalPeriod": {"start": "2025-07-17T22:00:00Z", "duration": "PT1H"},
             "payloads": [{"type": "PRICE", "values": [0.3]}]}]}))
    assert bad.status_code == 400
    assert bad.json()["errors"] == ["intervals[0]: payload type 'PRICE' is not one gridflex thermostats follow "
                                    "(CONTROL_SETPOINT, SIMPLE, X_GRIDFLEX_EVENT_REASON)"]


async def test_tokens_carry_scopes_and_a_ven_cannot_write_events_or_see_another_ven(vtn):
    ven_token = await in_thread(vtn.token, "energyhub")
    with vtn.http(ven_token) as http:
        refused = await in_thread(lambda: http.post("/events", json=event_body(utc(2025, 7, 18, 22), 1)))
        assert refused.status_code == 403 and "write_events" in refused.json()["detail"]
        assert [v["id"] for v in (await in_thread(http.get, "/vens")).json()] == ["energyhub"]
        assert (await in_thread(http.get, "/vens/resideo")).status_code == 404
        programs = (await in_thread(http.get, "/programs")).json()
        # energyhub is a provider of both SEP terms and Save Power Days; its target is all it sees.
        assert {p["id"] for p in programs} == {"sce-sep-2025", "sce-sep-legacy", "sce-save-power-days"}
        assert all(p["targets"] == ["energyhub"] for p in programs)
    read_only = await in_thread(vtn.token, "energyhub", ["read_targets"])
    with vtn.http(read_only) as http:
        assert (await in_thread(http.get, "/reports")).status_code == 403
    with vtn.http() as http:
        assert (await in_thread(http.get, "/events")).status_code == 401
        wrong = await in_thread(lambda: http.post("/auth/token", data={
            "grant_type": "client_credentials", "client_id": "energyhub", "client_secret": "guess"}))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        scoped = await in_thread(lambda: http.post("/auth/token", data={
            "grant_type": "client_credentials", "client_id": "energyhub", "client_secret": vtn.secrets["energyhub"],
            "scope": "write_events"}))
        assert scoped.status_code == 400 and scoped.json()["error"] == "invalid_scope"
    with vtn.http("not-a-token") as http:
        assert (await in_thread(http.get, "/programs")).status_code == 401


async def test_a_callback_that_keeps_failing_is_retried_then_dead_lettered_with_its_reason(vtn):
    resideo = await in_thread(vtn.client, "resideo")
    created = await in_thread(resideo.create_subscription, subscription(vtn.webhooks, "/broken", "resideo"))
    assert created.status_code == 201
    utility = await in_thread(vtn.client, "utility")
    answer = await in_thread(utility.create_event, event_body(utc(2025, 7, 18, 22), 1, targets=["resideo"]))
    assert answer.status_code == 201, answer.text
    event_id = answer.json()["id"]
    attempts = await vtn.webhooks.wait_for("/broken", 3)
    assert [n["object"]["id"] for n in attempts] == [event_id] * 3  # three attempts, 0.2 s then 0.4 s apart

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        letters = [r.value for r in await vtn.system.read(DEAD_LETTERS, idle_timeout=0.5)
                   if r.value["service"] == "vtn" and r.value["reason_code"] == "CALLBACK_FAILED"]
        if letters:
            break
        await asyncio.sleep(0.5)
    [letter] = letters
    assert letter["source_topic"] == f"gridflex.dispatch.event-lifecycle.v1{vtn.system.suffix}"
    assert letter["key"] == event_id.encode()
    assert re.fullmatch(rf"subscription {created.json()['id']}: POST http://127\.0\.0\.1:\d+/broken answered "
                        r"HTTP 500 \(attempt 3 of 3\); given up", letter["reason"])
    assert "hook-token" not in json.dumps(letter, default=str)
    await asyncio.sleep(1.0)
    assert len([p for p, _, _ in vtn.webhooks.received if p == "/broken"]) == 3  # no attempt after giving up
