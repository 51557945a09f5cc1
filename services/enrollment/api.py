"""The enrollment API for providers: JSON over HTTP on the service's web server.

A provider authenticates with a bearer token (``gridflex partner credential``); the token alone
says which provider it is. A submitted enrollment request takes the same path as one sent to
Kafka: it is produced onto ``partner.<provider>.enrollment-requests.v1``. Decisions and
enrollments are read from the Postgres projection (:mod:`services.enrollment.projection`). The
routes are documented in ``openapi.yaml`` beside this module, served at ``/openapi.json``.

Tokens, bodies and account data never go to the logs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import structlog
import yaml
from aiohttp.web import Request, Response, json_response

from gridflex.streaming import RecordPublisher, ServiceRuntime
from gridflex.topics import ENROLLMENT_REQUESTS
from gridflex.db import json_ready
from gridflex.web import Handler, Refused, add_route, bearer_token, error_response, unauthorized
from services.enrollment.projection import Database, RequestIdReused
from services.enrollment.requests import InvalidRequest, enrollment_request, parse_submission, parse_wait

log = structlog.get_logger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
LONGEST_WAIT_S = 30.0
POLL_INTERVAL_S = 0.2
PRODUCE_TIMEOUT_MS = 10_000  # a request waits this long for Kafka before the provider is told to retry


def problems_response(error: InvalidRequest) -> Response:
    return json_response({"errors": [{"field": p.field, "problem": p.problem} for p in error.problems]}, status=422)


# -- what a provider sees ----------------------------------------------------------------------


def decision_view(decision: dict) -> dict:
    """A decision as JSON (provider_id left out: it is the caller)."""
    return {key: json_ready(value) for key, value in decision.items() if key != "provider_id"}


def account_view(provider_id: str, service_account_id: str, state: dict | None, decisions: list[dict]) -> dict | None:
    """The caller's periods and data-sharing authorizations on an account, the account's
    lock-outs, and the caller's decisions on it; None when the caller has neither periods nor
    decisions there. Other providers' periods are never shown."""
    state = state or {}
    periods = [period for period in state.get("enrollments", []) if period["provider_id"] == provider_id]
    if not periods and not decisions:
        return None
    return {
        "service_account_id": service_account_id,
        "enrollments": periods,
        "lockouts": state.get("lockouts", []),
        "authorizations": [grant for grant in state.get("authorizations", []) if grant["provider_id"] == provider_id],
        "decisions": [decision_view(decision) for decision in decisions],
    }


def thermostat_view(provider_id: str, thermostat_serial: str, states: list[dict], decisions: list[dict]) -> dict | None:
    """The caller's periods of one thermostat (on whichever accounts) and its decisions on it."""
    periods = [
        {"service_account_id": state["service_account_id"], **period}
        for state in states for period in state["enrollments"]
        if period["provider_id"] == provider_id and period["thermostat_serial"] == thermostat_serial
    ]
    if not periods and not decisions:
        return None
    return {
        "thermostat_serial": thermostat_serial,
        "enrollments": sorted(periods, key=lambda period: period["effective_from"]),
        "decisions": [decision_view(decision) for decision in decisions],
    }


def status_url(provider_id: str, request_id: str) -> str:
    return f"/v1/providers/{provider_id}/enrollment-requests/{request_id}"


# -- routes ------------------------------------------------------------------------------------


def add_routes(runtime: ServiceRuntime, database: Database) -> None:
    """Register the provider API (documented in openapi.yaml) on the service's web server."""
    app = runtime.app
    publisher = RecordPublisher(runtime, PRODUCE_TIMEOUT_MS)
    document = json.dumps(yaml.safe_load(OPENAPI_PATH.read_text()))

    def route(method: str, path: str, handler: Handler) -> None:
        add_route(app, method, path, handler, errors={InvalidRequest: problems_response})

    async def caller(request: Request, provider_id: str) -> str:
        """The provider whose token came with the request; it must be the one in the path."""
        token = bearer_token(request.headers.get("Authorization"))
        caller_id = await database.provider_of_token(token) if token else None
        if caller_id is None:
            raise unauthorized(token)
        if caller_id != provider_id:
            log.info("request refused: another provider's path", caller=caller_id, provider_id=provider_id)
            raise Refused(error_response(403, "forbidden",
                                         f"this token belongs to provider {caller_id}; it cannot act for provider {provider_id}"))
        return caller_id

    async def submit_enrollment_request(request: Request, provider_id: str) -> Response:
        provider = await caller(request, provider_id)
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise Refused(error_response(400, "invalid_json", "the body is not JSON")) from None
        submission = parse_submission(body)
        try:
            stored = await database.submit(provider, submission, runtime.now())
        except RequestIdReused as reused:
            raise Refused(error_response(409, "request_id_reused", str(reused))) from None
        # A repeat is sent again: the first attempt may have failed after it was recorded, and
        # the decision is made once per request_id however often the request arrives.
        request = enrollment_request(stored.body, stored.submitted_at)
        await publisher.send(ENROLLMENT_REQUESTS.format(provider_id=provider), request["service_account_id"], request)
        request_id = stored.body["request_id"]
        log.info("enrollment request submitted", provider_id=provider, request_id=request_id, repeated=stored.repeated)
        url = status_url(provider, request_id)
        return json_response({"request_id": request_id, "status_url": url}, status=202, headers={"Location": url})

    async def enrollment_request_status(request: Request, provider_id: str, request_id: str) -> Response:
        provider = await caller(request, provider_id)
        wait = parse_wait(request.query.get("wait"), LONGEST_WAIT_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            decision = await database.decision(provider, request_id)
            if decision is not None:
                return json_response({"status": "DECIDED", **decision_view(decision)})
            if loop.time() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL_S)
        if await database.submitted(provider, request_id):
            return json_response({"status": "PENDING", "request_id": request_id}, status=202)
        raise Refused(error_response(404, "not_found", f"no enrollment request {request_id!r} of {provider!r}"))

    async def account_enrollments(request: Request, provider_id: str, service_account_id: str) -> Response:
        provider = await caller(request, provider_id)
        view = account_view(provider, service_account_id, *await database.account(provider, service_account_id))
        if view is None:
            raise Refused(error_response(404, "not_found", "you have no enrollments or decisions on this account"))
        return json_response(view)

    async def thermostat_enrollments(request: Request, provider_id: str, thermostat_serial: str) -> Response:
        provider = await caller(request, provider_id)
        view = thermostat_view(provider, thermostat_serial, *await database.thermostat(provider, thermostat_serial))
        if view is None:
            raise Refused(error_response(404, "not_found", "you have no enrollments or decisions on this thermostat"))
        return json_response(view)

    async def openapi(request: Request) -> Response:
        return Response(text=document, content_type="application/json")

    route("post", "/v1/providers/{provider_id}/enrollment-requests", submit_enrollment_request)
    route("get", "/v1/providers/{provider_id}/enrollment-requests/{request_id}", enrollment_request_status)
    route("get", "/v1/providers/{provider_id}/accounts/{service_account_id}", account_enrollments)
    route("get", "/v1/providers/{provider_id}/thermostats/{thermostat_serial}", thermostat_enrollments)
    route("get", "/openapi.json", openapi)

    @app.on_before_shutdown.connect
    async def stop_publisher(app: Any, **kwargs: Any) -> None:
        await publisher.stop()
