"""The OpenADR 3.1 HTTP API (the operations listed in :mod:`services.vtn.spec`), on the service's
web server.

Every answer that is not a success is the spec's ``problem`` object naming the reason. An event
write becomes an EnergyEventRequest on ``utility.energy-events.v1``; the answer waits (bounded)
for dispatch's lifecycle record answering that request (matched by the request's offset): 201/200
with the event, 409 listing every rule broken, or 503 when dispatch does not answer in time. A
report becomes the reporting provider's ThermostatState and DispatchAck records: the provider is
the token's, never the body's.

Tokens, secrets and bodies never go to the logs.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import structlog
from aiohttp.web import Request, Response, json_response
from aiokafka.errors import KafkaError
from faust.web import View

from gridflex.calendar import local_date
from gridflex.clock import ClockNotStarted
from gridflex.db import TRANSIENT_ERRORS
from gridflex.programs import ProgramCatalogue
from gridflex.streaming import ServiceRuntime
from gridflex.topics import DISPATCH_ACKS, ENERGY_EVENTS, THERMOSTAT_STATE
from gridflex.web import bearer_token
from services.vtn import spec
from services.vtn.domain import Invalid, access
from services.vtn.domain.access import Caller, ScopeRefused
from services.vtn.domain.events import (
    StoredEvent,
    cancel_request,
    energy_event_request,
    event_object,
    parse_event_request,
)
from services.vtn.domain.objects import (
    program_object,
    provider_thermostats,
    resource_object,
    ven_object,
)
from services.vtn.domain.reports import report_telemetry
from services.vtn.domain.timing import format_instant
from services.vtn.publisher import Publisher
from services.vtn.settings import VtnSettings
from services.vtn.storage import Database

log = structlog.get_logger(__name__)

POLL_S = 0.1
OBJECT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
SUBSCRIBABLE = {"EVENT", "PROGRAM"}  # programs come from the catalogue: subscribing is allowed, nothing changes
NOTIFIED_OPERATIONS = {"CREATE", "UPDATE", "DELETE"}

Handler = Callable[..., Awaitable[Response]]


class Refused(Exception):
    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def problem(status: int, title: str, detail: str, headers: dict | None = None, **extensions: Any) -> Response:
    """RFC 7807 problem details (the spec's ``problem`` schema), extension members allowed."""
    return json_response({"type": "about:blank", "title": title, "status": status, "detail": detail, **extensions},
                         status=status, headers=headers)


def not_found(kind: str, object_id: str) -> Refused:
    # The same answer whether the object does not exist or belongs to someone else.
    return Refused(problem(404, "Not found", f"no {kind} {object_id!r} that you may see"))


def _answering(handler: Handler) -> Handler:
    async def answer(view: View, request: Request, **match: str) -> Response:
        try:
            return await handler(request, **match)
        except Refused as refused:
            return refused.response
        except Invalid as invalid:
            return problem(400, "Bad request", "; ".join(invalid.problems), errors=invalid.problems)
        except ScopeRefused as refused:
            return problem(403, "Forbidden", str(refused))
        except (*TRANSIENT_ERRORS, KafkaError, ClockNotStarted) as exc:
            log.warning("request failed: a dependency is unavailable", route=handler.__name__, error=type(exc).__name__)
            return problem(503, "Service unavailable", "a dependency (Kafka, Postgres or the clock) is unavailable; "
                           "try again shortly", headers={"Retry-After": "5"})
        except Exception:
            log.exception("request failed", route=handler.__name__)
            return problem(500, "Internal server error", "the VTN failed to answer; the error is logged")

    answer.__name__ = handler.__name__
    return answer


def _path(app: Any, path: str, **methods: Handler) -> None:
    """One view per path, with a handler per method; other methods answer 405."""
    name = "vtn_" + "_".join(handler.__name__ for handler in methods.values())
    app.page(path, name=name)(type(name, (View,), {method: _answering(handler) for method, handler in methods.items()}))


# -- reading requests ----------------------------------------------------------------------------


async def json_body(request: Request, schema_name: str) -> dict:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise Invalid(["the body is not JSON"]) from None
    found = spec.problems(schema_name, body)
    if found:
        raise Invalid(found)
    if _has_nul(body):
        raise Invalid(["text must not contain NUL (\\u0000) characters"])
    return body


def _has_nul(value: object) -> bool:
    """Postgres text and jsonb cannot hold NUL."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def query_text(request: Request, name: str, *, object_id: bool = False) -> str | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not 1 <= len(value) <= 128 or "\x00" in value or (object_id and not set(value) <= OBJECT_ID_CHARS):
        raise Invalid([f"{name} {value[:40]!r} must be 1-128 characters" + (" of letters, digits, '_' and '-'"
                                                                            if object_id else " without NUL")])
    return value


def query_targets(request: Request) -> list[str]:
    targets = request.query.getall("targets", [])
    bad = [target for target in targets if not 1 <= len(target) <= 128]
    if bad:
        raise Invalid(["each of targets must be 1-128 characters"])
    return targets


def paged(request: Request, items: list) -> list:
    skip, limit = access.page(request.query)
    return items[skip:skip + limit]


def base_url(request: Request, settings: VtnSettings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


# -- the routes ------------------------------------------------------------------------------------


def add_routes(runtime: ServiceRuntime, settings: VtnSettings, database: Database, programs: ProgramCatalogue,
               publisher: Publisher) -> None:
    app = runtime.app
    document = json.dumps(spec.document())

    def now() -> datetime:
        instant = runtime.now()
        return instant.replace(microsecond=instant.microsecond // 1000 * 1000)  # what timestamp-millis keeps

    async def caller_of(request: Request, scope: str | None) -> Caller:
        token = bearer_token(request.headers.get("Authorization"))
        caller = await database.caller(token) if token else None
        if caller is None:
            challenge = 'Bearer realm="openadr3"' + (', error="invalid_token"' if token else "")
            raise Refused(problem(401, "Unauthorized", "a valid, unexpired bearer token is required "
                                  "(POST /auth/token with your client credentials)",
                                  headers={"WWW-Authenticate": challenge}))
        if scope is not None:
            caller.require(scope)
        return caller

    # -- auth ------------------------------------------------------------------------------------

    async def auth_server(request: Request) -> Response:
        return json_response({"tokenURL": f"{base_url(request, settings)}/auth/token"})

    async def auth_token(request: Request) -> Response:
        def refused(status: int, error: str, description: str) -> Refused:
            headers = {"WWW-Authenticate": 'Basic realm="openadr3"'} if status == 401 else None
            return Refused(problem(status, "Token refused", description, headers=headers, error=error,
                                   error_description=description))

        raw = (await request.read()).decode(errors="replace")
        form = {key: values for key, values in parse_qs(raw, keep_blank_values=True).items()}
        if any(len(values) > 1 for values in form.values()):
            raise refused(400, "invalid_request", "a parameter is repeated")
        fields = {key: values[0] for key, values in form.items()}
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        if request.headers.get("Authorization", "").lower().startswith("basic "):
            client_id, secret = _basic(request.headers["Authorization"]) or (None, None)
        if fields.get("grant_type") != "client_credentials":
            raise refused(400, "unsupported_grant_type" if fields.get("grant_type") else "invalid_request",
                          "grant_type must be client_credentials")
        if not client_id or not secret or len(client_id) > 4096 or len(secret) > 4096 or "\x00" in client_id + secret:
            raise refused(400, "invalid_request", "client_id and client_secret are required")
        authenticated = await database.authenticate(client_id, secret)
        if authenticated is None:
            log.info("token refused: bad client credentials")
            raise refused(401, "invalid_client", "unknown client or wrong secret")
        role, _ = authenticated
        try:
            scopes = access.requested_scopes(role, fields.get("scope"))
        except Invalid as invalid:
            raise refused(400, "invalid_scope", invalid.problems[0]) from None
        token = await database.mint_token(client_id, scopes, timedelta(seconds=settings.token_ttl_s))
        log.info("token issued", client_id=client_id, role=role, scopes=" ".join(scopes))
        return json_response({"access_token": token, "token_type": "Bearer", "expires_in": settings.token_ttl_s,
                              "scope": " ".join(scopes)}, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def notifiers(request: Request) -> Response:
        await caller_of(request, None)  # the spec asks read_all; a VEN must learn the bindings too
        return json_response({"WEBHOOK": True})

    async def openapi(request: Request) -> Response:
        return Response(text=document, content_type="application/json")

    # -- programs --------------------------------------------------------------------------------

    def program_view(caller: Caller, program, targets: list[str]) -> dict | None:
        obj = program_object(program)
        visible, shown = access.visible_targets(caller, obj["targets"], targets)
        if not visible:
            return None
        if shown is not None:
            obj["targets"] = list(shown) or None
        return obj

    async def search_programs(request: Request) -> Response:
        caller = await caller_of(request, "read_targets")
        targets = query_targets(request)
        views = [view for program in sorted(programs, key=lambda p: p.id)
                 if (view := program_view(caller, program, targets)) is not None]
        return json_response(paged(request, views))

    async def program_by_id(request: Request, programID: str) -> Response:
        caller = await caller_of(request, "read_targets")
        program = programs.programs.get(programID)
        view = program_view(caller, program, []) if program is not None else None
        if view is None:
            raise not_found("program", programID)
        return json_response(view)

    # -- events ----------------------------------------------------------------------------------

    def event_view(caller: Caller, event: StoredEvent, targets: list[str]) -> dict | None:
        visible, shown = access.visible_targets(caller, event.targets, targets)
        if not visible:
            return None
        return event_object(event, programs.programs.get(event.program_id), shown)

    async def search_events(request: Request) -> Response:
        caller = await caller_of(request, "read_targets")
        program_id = query_text(request, "programID", object_id=True)
        targets = query_targets(request)
        active = request.query.get("active")
        if active not in (None, "true", "false"):
            raise Invalid([f"active {active[:20]!r} must be true or false"])
        stored = await database.events(program_id, now() if active == "true" else None)
        views = [view for event in stored if (view := event_view(caller, event, targets)) is not None]
        return json_response(paged(request, views))

    async def event_by_id(request: Request, eventID: str) -> Response:
        caller = await caller_of(request, "read_targets")
        event = await database.event(eventID)
        view = event_view(caller, event, []) if event is not None else None
        if view is None:
            raise not_found("event", eventID)
        return json_response(view)

    async def dispatched(request: Request, caller: Caller, event_id: str, action: str, record: dict,
                         details: dict | None, success: int) -> Response:
        """Send the request, wait for dispatch's answer, and answer with it."""
        if details is not None:
            await database.record_request(event_id, action, record["issued_at"], details)
        stored_at = await publisher.send(ENERGY_EVENTS, event_id, record)
        log.info("event request sent", event_id=event_id, action=action, client_id=caller.client_id,
                 offset=stored_at.offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.decision_wait_s
        while (decision := await database.decision(stored_at.offset)) is None and loop.time() < deadline:
            await asyncio.sleep(POLL_S)
        url = f"{base_url(request, settings)}/events/{event_id}"
        if decision is None:
            return problem(503, "Decision pending", f"the {action} of event {event_id} is on its way to dispatch, "
                           f"which did not decide it within {settings.decision_wait_s:g} s; GET {url} shows the event "
                           "once accepted (do not send the request again)", headers={"Retry-After": "5"},
                           instance=url)
        if decision["status"] == "REJECTED":
            failures = decision["failures"]
            status = 404 if {f["code"] for f in failures} == {"UNKNOWN_EVENT"} else 409
            return problem(status, "Rejected by the program's rules",
                           "; ".join(f"{f['code']}: {f['message']}" for f in failures), instance=url,
                           failures=failures)
        event = await database.event(event_id, cancelled=True)
        return json_response(event_object(event, programs.programs.get(event.program_id)), status=success)

    async def create_event(request: Request) -> Response:
        caller = await caller_of(request, "write_events")
        intent = parse_event_request(await json_body(request, "eventRequest"), programs)
        event_id = f"evt-{uuid.uuid4().hex[:20]}"
        record = energy_event_request(event_id, intent, "SCHEDULE", now())
        return await dispatched(request, caller, event_id, "SCHEDULE", record, intent.details, 201)

    async def update_event(request: Request, eventID: str) -> Response:
        caller = await caller_of(request, "write_events")
        body = await json_body(request, "eventRequest")
        existing = await database.event(eventID)
        if existing is None:
            raise not_found("event", eventID)
        intent = parse_event_request(body, programs)
        if intent.same_dispatch(existing):  # nothing the providers see changes: dispatch has nothing to decide
            await database.change_details(eventID, intent.details, now())
            event = await database.event(eventID)
            return json_response(event_object(event, programs.programs.get(event.program_id)))
        record = energy_event_request(eventID, intent, "UPDATE", now())
        return await dispatched(request, caller, eventID, "UPDATE", record, intent.details, 200)

    async def delete_event(request: Request, eventID: str) -> Response:
        caller = await caller_of(request, "write_events")
        existing = await database.event(eventID)
        if existing is None:
            raise not_found("event", eventID)
        return await dispatched(request, caller, eventID, "CANCEL", cancel_request(existing, now()), None, 200)

    # -- vens and resources ----------------------------------------------------------------------

    async def ven_views(caller: Caller) -> list[dict]:
        return [ven_object(row["client_id"], row["created_at"], row["modified_at"]) for row in await database.vens()
                if caller.owns(row["client_id"])]

    def target_filter(items: list[dict], targets: list[str]) -> list[dict]:
        return [item for item in items if not targets or set(item["targets"]) & set(targets)]

    async def search_vens(request: Request) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        name = query_text(request, "venName")
        vens = [ven for ven in await ven_views(caller) if name is None or ven["venName"] == name]
        return json_response(paged(request, target_filter(vens, query_targets(request))))

    async def ven_by_id(request: Request, venID: str) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        found = [ven for ven in await ven_views(caller) if ven["id"] == venID]
        if not found:
            raise not_found("ven", venID)
        return json_response(found[0])

    async def resource_views(caller: Caller, ven_id: str | None) -> list[dict]:
        providers = [ven["id"] for ven in await ven_views(caller) if ven_id is None or ven["id"] == ven_id]
        today = local_date(now())
        views = []
        for provider in providers:
            thermostats = provider_thermostats(provider, await database.provider_accounts(provider), today)
            views += [resource_object(provider, thermostat) for thermostat in thermostats]
        return views

    async def search_resources(request: Request) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        name = query_text(request, "resourceName")
        ven_id = query_text(request, "venID", object_id=True)
        targets = query_targets(request)
        resources = [r for r in await resource_views(caller, ven_id) if name is None or r["resourceName"] == name]
        return json_response(paged(request, target_filter(resources, targets)))

    async def resource_by_id(request: Request, resourceID: str) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        found = [r for r in await resource_views(caller, None) if r["id"] == resourceID]
        if not found:
            raise not_found("resource", resourceID)
        return json_response(found[0])

    # -- reports ---------------------------------------------------------------------------------

    def report_view(row: dict) -> dict:
        return {"id": row["id"], "createdDateTime": format_instant(row["created_at"]),
                "modificationDateTime": format_instant(row["modified_at"]), "objectType": "REPORT",
                "clientID": row["client_id"], **row["body"]}

    async def create_report(request: Request) -> Response:
        caller = await caller_of(request, "write_reports")
        provider = caller.provider_id
        if provider is None:
            raise ScopeRefused("only a VEN (a provider) reports on its thermostats")
        body = await json_body(request, "reportRequest")
        event = await database.event(body["eventID"], cancelled=True)
        if event is None or not access.visible_targets(caller, event.targets, [])[0]:
            raise Invalid([f"eventID {body['eventID']!r} is not an event addressed to you"])
        today = local_date(now())
        thermostats = {t["thermostat_serial"]: t["service_account_id"]
                       for t in provider_thermostats(provider, await database.provider_accounts(provider), today)}
        telemetry = report_telemetry(body, event.event_id, thermostats)
        deliveries = [publisher.send(THERMOSTAT_STATE.format(provider_id=provider), state["thermostat_serial"], state)
                      for state in telemetry.states]
        deliveries += [publisher.send(DISPATCH_ACKS.format(provider_id=provider), ack["thermostat_serial"], ack)
                       for ack in telemetry.acks]
        await asyncio.gather(*deliveries)
        stored = await database.add_report(provider, event, body, now())
        log.info("report received", report_id=stored["id"], provider_id=provider, event_id=event.event_id,
                 states=len(telemetry.states), acks=len(telemetry.acks))
        return json_response(report_view(stored), status=201)

    async def search_reports(request: Request) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        rows = await database.reports(
            caller.provider_id, program_id=query_text(request, "programID", object_id=True),
            event_id=query_text(request, "eventID", object_id=True), client_name=query_text(request, "clientName"))
        return json_response(paged(request, [report_view(row) for row in rows]))

    async def report_by_id(request: Request, reportID: str) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        rows = await database.reports(caller.provider_id, reportID)
        if not rows:
            raise not_found("report", reportID)
        return json_response(report_view(rows[0]))

    # -- subscriptions ---------------------------------------------------------------------------

    def subscription_view(row: dict) -> dict:
        return {"id": row["id"], "createdDateTime": format_instant(row["created_at"]),
                "modificationDateTime": format_instant(row["modified_at"]), "objectType": "SUBSCRIPTION",
                "clientID": row["client_id"], **row["body"]}

    async def subscription_body(request: Request) -> dict:
        body = await json_body(request, "subscriptionRequest")
        problems = []
        if body.get("programID") is not None and body["programID"] not in programs:
            problems.append(f"programID {body['programID']!r} is not a program of this VTN")
        for index, entry in enumerate(body["objectOperations"]):
            url = urlsplit(entry["callbackUrl"])
            if url.scheme not in ("http", "https") or not url.hostname:
                problems.append(f"objectOperations/{index}/callbackUrl must be an http or https URL")
            unsupported = sorted(set(entry["objects"]) - SUBSCRIBABLE)
            if unsupported:
                problems.append(f"objectOperations/{index}/objects: this VTN notifies changes of EVENT (and PROGRAM, "
                                f"which do not change here), not {', '.join(unsupported)}")
            if not entry["operations"] or set(entry["operations"]) - NOTIFIED_OPERATIONS:
                problems.append(f"objectOperations/{index}/operations: give CREATE, UPDATE or DELETE "
                                "(reads are not notified)")
        if problems:
            raise Invalid(problems)
        return body

    async def owned_subscription(caller: Caller, subscription_id: str) -> dict:
        rows = await database.subscriptions(None if caller.role == "BL" else caller.client_id, subscription_id)
        if not rows:
            raise not_found("subscription", subscription_id)
        return rows[0]

    async def create_subscription(request: Request) -> Response:
        caller = await caller_of(request, "write_subscriptions")
        stored = await database.add_subscription(caller, await subscription_body(request),
                                                 datetime.now(timezone.utc))
        log.info("subscription created", subscription_id=stored["id"], client_id=caller.client_id)
        return json_response(subscription_view(stored), status=201)

    async def search_subscriptions(request: Request) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        program_id = query_text(request, "programID", object_id=True)
        client_name = query_text(request, "clientName")
        objects = request.query.getall("objects", [])
        if set(objects) - {"PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"}:
            raise Invalid(["objects must be among PROGRAM, EVENT, REPORT, SUBSCRIPTION, VEN, RESOURCE"])
        rows = [row for row in await database.subscriptions(None if caller.role == "BL" else caller.client_id)
                if (program_id is None or row["body"].get("programID") == program_id)
                and (client_name is None or row["body"]["clientName"] == client_name)
                and (not objects or any(set(objects) & set(entry["objects"])
                                        for entry in row["body"]["objectOperations"]))]
        return json_response(paged(request, [subscription_view(row) for row in rows]))

    async def subscription_by_id(request: Request, subscriptionID: str) -> Response:
        caller = await caller_of(request, "read_ven_objects")
        return json_response(subscription_view(await owned_subscription(caller, subscriptionID)))

    async def update_subscription(request: Request, subscriptionID: str) -> Response:
        caller = await caller_of(request, "write_subscriptions")
        body = await subscription_body(request)
        row = await owned_subscription(caller, subscriptionID)
        modified = datetime.now(timezone.utc)
        await database.change_subscription(subscriptionID, body, modified)
        return json_response(subscription_view({**row, "body": body, "modified_at": modified}))

    async def delete_subscription(request: Request, subscriptionID: str) -> Response:
        caller = await caller_of(request, "write_subscriptions")
        row = await owned_subscription(caller, subscriptionID)
        await database.delete_subscription(subscriptionID)
        log.info("subscription deleted", subscription_id=subscriptionID, client_id=caller.client_id)
        return json_response(subscription_view(row))

    _path(app, "/auth/server", get=auth_server)
    _path(app, "/auth/token", post=auth_token)
    _path(app, "/notifiers", get=notifiers)
    _path(app, "/openapi.json", get=openapi)
    _path(app, "/programs", get=search_programs)
    _path(app, "/programs/{programID}", get=program_by_id)
    _path(app, "/events", get=search_events, post=create_event)
    _path(app, "/events/{eventID}", get=event_by_id, put=update_event, delete=delete_event)
    _path(app, "/vens", get=search_vens)
    _path(app, "/vens/{venID}", get=ven_by_id)
    _path(app, "/resources", get=search_resources)
    _path(app, "/resources/{resourceID}", get=resource_by_id)
    _path(app, "/reports", get=search_reports, post=create_report)
    _path(app, "/reports/{reportID}", get=report_by_id)
    _path(app, "/subscriptions", get=search_subscriptions, post=create_subscription)
    _path(app, "/subscriptions/{subscriptionID}", get=subscription_by_id, put=update_subscription,
          delete=delete_subscription)

    @app.on_before_shutdown.connect
    async def stop_publisher(app: Any, **kwargs: Any) -> None:
        await publisher.stop()


def _basic(header: str) -> tuple[str, str] | None:
    """client_id and secret of an HTTP Basic header (RFC 6749 §2.3.1: form-urlencoded, then base64)."""
    import base64
    from urllib.parse import unquote_plus

    try:
        decoded = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if separator else None
