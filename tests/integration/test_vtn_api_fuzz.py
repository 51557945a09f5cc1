"""Property-based: schemathesis generates requests for every operation of the VTN's OpenAPI
document (valid and invalid bodies, parameters, tokens of a business-logic client and of a VEN)
against the real VTN, dispatch, broker and Postgres; no answer may be a server error, and every
answer must be one the document allows, in the schema it gives."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.integration.conftest import IsolatedSystem
from tests.integration.test_vtn import NOW, PROVIDERS, start_vtn


@pytest.fixture(scope="module")
async def fuzzed_vtn(running_stack):
    system = IsolatedSystem("vtnfuzz", PROVIDERS)
    await system.create_topics()
    await system.tick(NOW)
    await asyncio.to_thread(system.service("dispatch").start)
    running = await start_vtn(system, GRIDFLEX_VTN_DECISION_WAIT_S="5")
    tokens = {name: await asyncio.to_thread(running.token, name) for name in ("utility", "energyhub")}
    yield running, tokens
    system.stop()
    await running.webhooks.runner.cleanup()


CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def fuzz(base_url: str, token: str) -> int:
    """Every operation of the served document, 25 generated cases each (schemathesis' own pytest
    plugin does not run under pytest 9); returns how many operations were exercised."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

        call()
    return len(operations)


async def test_business_logic_requests_never_get_a_server_error_or_an_answer_outside_the_spec(fuzzed_vtn):
    running, tokens = fuzzed_vtn
    assert await asyncio.to_thread(fuzz, running.base_url, tokens["utility"]) == 22


async def test_ven_requests_never_get_a_server_error_or_an_answer_outside_the_spec(fuzzed_vtn):
    running, tokens = fuzzed_vtn
    assert await asyncio.to_thread(fuzz, running.base_url, tokens["energyhub"]) == 22
