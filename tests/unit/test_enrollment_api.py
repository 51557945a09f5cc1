"""The enrollment API's pure parts: request validation, what a provider sees, projection rows,
and the OpenAPI document against the routes actually registered."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest
import yaml

from gridflex.batch import InputRecord
from gridflex.codec import Undecodable
from gridflex.streaming import ServiceRuntime
from gridflex.topics import ENROLLMENT_REQUESTS
from services.enrollment import api
from services.enrollment.projection import Database, projection_rows
from services.enrollment.requests import (
    FIELDS, InvalidRequest, Problem, enrollment_request, parse_submission, parse_wait,
)
from services.enrollment.settings import EnrollmentSettings

BODY = {
    "request_id": "eh-2026-0001",
    "program_id": "sce-sep-2025",
    "action": "ENROLL",
    "service_account_id": "SA-1001",
    "thermostat_serial": "T-77",
    "thermostat_model": "Ecobee3 lite",
    "controls_central_ac": True,
    "thermostat_source": "RETAIL",
    "requested_at": "2026-07-15T14:00:00-07:00",
}


def problems_of(body) -> list[Problem]:
    with pytest.raises(InvalidRequest) as raised:
        parse_submission(body)
    return raised.value.problems


# -- validation ----------------------------------------------------------------------------------


def test_a_complete_body_is_kept_with_its_instant_in_utc():
    submission = parse_submission(BODY)
    assert submission == {**BODY, "requested_at": "2026-07-15T21:00:00.000Z"}


def test_the_same_instant_written_in_another_zone_is_the_same_submission():
    # Idempotent re-POSTs compare submissions, so the zone a client writes must not matter.
    assert parse_submission({**BODY, "requested_at": "2026-07-15T21:00:00Z"}) == parse_submission(BODY)


def test_absent_request_id_is_assigned_and_absent_requested_at_stays_absent():
    body = {key: value for key, value in BODY.items() if key not in ("request_id", "requested_at")}
    submission = parse_submission(body, new_request_id=lambda: "assigned-1")
    assert submission["request_id"] == "assigned-1"
    assert "requested_at" not in submission


def test_every_problem_of_a_body_is_listed():
    body = {
        "request_id": "has a space",
        "action": "SUBSCRIBE",
        "service_account_id": " SA-1001",
        "thermostat_serial": "",
        "thermostat_model": 42,
        "controls_central_ac": "yes",
        "thermostat_source": None,
        "requested_at": "2026-07-15T14:00:00",
        "colour": "blue",
    }
    assert [(p.field, p.problem) for p in problems_of(body)] == [
        ("request_id", "must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"),
        ("program_id", "is required"),
        ("action", "must be one of ENROLL, DISENROLL"),
        ("service_account_id", "must not start or end with whitespace"),
        ("thermostat_serial", "must not be empty"),
        ("thermostat_model", "must be a string"),
        ("controls_central_ac", "must be true or false"),
        ("thermostat_source", "is required"),
        ("requested_at", "must be an ISO 8601 date-time with a time zone, "
                         "e.g. 2026-07-15T14:00:00-07:00 or 2026-07-15T21:00:00Z"),
        ("colour", "is not a field of an enrollment request"),
    ]


def test_a_body_that_is_not_an_object_is_one_problem():
    assert problems_of(["ENROLL"]) == [Problem("", "must be a JSON object")]


def test_text_longer_than_128_characters_is_refused():
    assert problems_of({**BODY, "thermostat_model": "x" * 129}) == [
        Problem("thermostat_model", "must be at most 128 characters")
    ]


def test_the_record_defaults_requested_at_to_the_submission_time_and_fits_the_schema(tmp_path):
    submitted_at = datetime(2026, 7, 15, 21, 30, tzinfo=timezone.utc)
    submission = parse_submission({key: value for key, value in BODY.items() if key != "requested_at"})
    record = enrollment_request(submission, submitted_at)
    assert record["requested_at"] == submitted_at
    # The same codec the service produces with: the record must encode and read back unchanged.
    codec = runtime_for(tmp_path).codec(ENROLLMENT_REQUESTS)
    assert codec.decode(codec.encode(record)) == record


def test_wait_is_capped_at_the_longest_and_refuses_what_is_not_seconds():
    assert parse_wait(None, 30) == 0
    assert parse_wait("2.5", 30) == 2.5
    assert parse_wait("600", 30) == 30
    for text in ("-1", "soon", "nan", "inf"):
        with pytest.raises(InvalidRequest):
            parse_wait(text, 30)


def test_bearer_token_is_read_from_the_authorization_header():
    assert api.bearer_token("Bearer abc.def") == "abc.def"
    assert api.bearer_token("bearer abc") == "abc"
    assert api.bearer_token("Basic abc") is None
    assert api.bearer_token("Bearer ") is None
    assert api.bearer_token(None) is None


# -- what a provider sees ------------------------------------------------------------------------


def period(provider: str, serial: str, request_id: str, start: str, end: str | None = None) -> dict:
    return {"program_id": "sce-sep-2025", "provider_id": provider, "thermostat_serial": serial,
            "request_id": request_id, "effective_from": start, "effective_to": end, "end_reason": None}


SHARED_ACCOUNT = {
    "service_account_id": "SA-1001",
    "enrollments": [period("energyhub", "T-1", "eh-1", "2026-06-01", "2026-07-01"),
                    period("resideo", "R-9", "rs-1", "2026-07-02")],
    "lockouts": [{"program_id": "sce-sep-2025", "until": "2026-12-31", "reason": "DISENROLLED"}],
    "authorizations": [{"authorization_id": "A-1", "provider_id": "resideo", "status": "ACTIVE",
                        "requested_at": "2026-06-20T00:00:00.000Z", "reauthorization_required": False}],
    "updated_at": "2026-07-02T00:00:00.000Z",
}


def test_a_provider_sees_only_its_own_periods_of_a_shared_account_and_the_lockouts():
    view = api.account_view("energyhub", "SA-1001", SHARED_ACCOUNT, [])
    assert view["enrollments"] == [SHARED_ACCOUNT["enrollments"][0]]
    assert view["lockouts"] == SHARED_ACCOUNT["lockouts"]
    assert view["authorizations"] == []  # resideo's data-sharing grant is resideo's business


def test_a_provider_with_nothing_on_an_account_sees_nothing():
    assert api.account_view("nest-labs", "SA-1001", SHARED_ACCOUNT, []) is None
    assert api.account_view("nest-labs", "SA-404", None, []) is None


def test_a_decision_alone_makes_the_account_visible_with_dates_as_iso_strings():
    decision = {"provider_id": "nest-labs", "request_id": "nl-1", "outcome": "REJECTED",
                "effective_date": None, "lockout_until": date(2026, 12, 31),
                "decided_at": datetime(2026, 7, 15, 21, 0, tzinfo=timezone.utc)}
    view = api.account_view("nest-labs", "SA-1001", SHARED_ACCOUNT, [decision])
    assert view["enrollments"] == []
    assert view["decisions"] == [{"request_id": "nl-1", "outcome": "REJECTED", "effective_date": None,
                                  "lockout_until": "2026-12-31", "decided_at": "2026-07-15T21:00:00.000Z"}]


def test_a_thermostat_shows_the_callers_periods_on_every_account():
    moved = {**SHARED_ACCOUNT, "service_account_id": "SA-2002",
             "enrollments": [period("energyhub", "T-1", "eh-2", "2026-07-05")]}
    view = api.thermostat_view("energyhub", "T-1", [moved, SHARED_ACCOUNT], [])
    assert [(p["service_account_id"], p["request_id"]) for p in view["enrollments"]] == [
        ("SA-1001", "eh-1"), ("SA-2002", "eh-2"),
    ]
    assert api.thermostat_view("resideo", "T-1", [moved, SHARED_ACCOUNT], []) is None


# -- projection rows -----------------------------------------------------------------------------


def a_decision(request_id: str, outcome: str, provider: str = "energyhub") -> dict:
    return {
        "request_id": request_id, "provider_id": provider, "program_id": "sce-sep-2025", "action": "ENROLL",
        "service_account_id": "SA-1001", "thermostat_serial": "T-1", "outcome": outcome,
        "effective_date": date(2026, 7, 20) if outcome == "ACCEPTED" else None,
        "failures": [] if outcome == "ACCEPTED" else [{"code": "LOCKED_OUT", "message": "Locked out."}],
        "lockout_until": None, "requested_at": datetime(2026, 7, 15, 21, tzinfo=timezone.utc),
        "decided_at": datetime(2026, 7, 15, 21, 1, tzinfo=timezone.utc),
    }


def record(topic: str, offset: int, value, key: bytes = b"SA-1001", raw: bytes | None = b"...") -> InputRecord:
    return InputRecord(topic, 0, offset, 0, key, raw, value)


DECISIONS_TOPIC = "partner.energyhub.enrollment-decisions.v1-test"
STATE_TOPIC = "gridflex.enrollment.state.v1-test"


def test_the_first_decision_of_a_request_and_the_latest_state_of_an_account_are_written():
    later_state = {**SHARED_ACCOUNT, "lockouts": []}
    rows = projection_rows([
        record(DECISIONS_TOPIC, 5, a_decision("eh-1", "ACCEPTED")),
        record(DECISIONS_TOPIC, 6, a_decision("eh-1", "REJECTED")),  # a re-decision: the first stands
        record(STATE_TOPIC, 10, SHARED_ACCOUNT),
        record(STATE_TOPIC, 11, later_state),
    ])
    [decision] = rows.decisions
    assert decision[6] == "ACCEPTED" and decision[-1] == 5
    [account] = rows.accounts
    assert json.loads(account[1]) == later_state and account[-1] == 11
    assert rows.rejected == []


def test_undecodable_records_and_decisions_on_another_providers_topic_go_to_dead_letters():
    garbage = record(DECISIONS_TOPIC, 7, Undecodable("UNDECODABLE", "not Avro"))
    impostor = record(DECISIONS_TOPIC, 8, a_decision("rs-1", "ACCEPTED", provider="resideo"))
    rows = projection_rows([garbage, impostor])
    assert [(r.offset, code) for r, code, _ in rows.rejected] == [(7, "UNDECODABLE"), (8, "PROVIDER_MISMATCH")]
    assert rows.decisions == []


def test_a_tombstone_on_the_state_topic_clears_the_account():
    rows = projection_rows([record(STATE_TOPIC, 12, Undecodable("UNDECODABLE", "empty"), raw=None)])
    assert rows.accounts == [("SA-1001", None, None, 0, 12)]


# -- the OpenAPI document ------------------------------------------------------------------------


def runtime_for(tmp_path) -> ServiceRuntime:
    settings = EnrollmentSettings(data_dir=tmp_path)
    return ServiceRuntime("enrollment", settings, web_port=settings.web_port)


@pytest.fixture
def registered(tmp_path) -> set[tuple[str, str]]:
    """(path, method) of every route add_routes registers."""
    runtime = runtime_for(tmp_path)
    before = set(runtime.app.web.views)
    api.add_routes(runtime, Database(runtime.settings.database_url))
    return {
        (path, method.lower())
        for path, view in runtime.app.web.views.items() if path not in before
        for method in view.get_methods() - {"HEAD"}
    }


def openapi_document() -> dict:
    return yaml.safe_load(api.OPENAPI_PATH.read_text())


def test_every_registered_route_is_documented_and_every_documented_one_registered(registered):
    document = openapi_document()
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert registered == documented


def test_the_document_is_openapi_3_1_with_bearer_security_and_the_refusals_of_each_route():
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if path.startswith("/v1/"):
                assert {"401", "403", "503"} <= codes, f"{method} {path}"
                assert "security" not in operation, "every /v1 route uses the document's bearer security"
            else:
                assert operation["security"] == []
    post = document["paths"]["/v1/providers/{provider_id}/enrollment-requests"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "403", "409", "422", "503"}


def test_every_reference_in_the_document_resolves():
    document = openapi_document()

    def references(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    refs = set(references(document))
    assert refs
    for ref in refs:
        target = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, f"{ref} does not resolve"
            target = target[part]


def test_the_request_schema_lists_exactly_the_fields_validation_accepts():
    schema = openapi_document()["components"]["schemas"]["EnrollmentRequest"]
    assert list(schema["properties"]) == list(FIELDS)
    assert set(schema["required"]) == set(FIELDS) - {"request_id", "requested_at"}
