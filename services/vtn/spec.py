"""The OpenAPI document this VTN serves (``/openapi.json``) and validates request bodies against:
OpenADR 3.1.0's ``openadr3.yaml`` (copied beside this module, Apache-2.0), restricted to the
operations implemented, with three errata of the published file corrected:

1. ``BlVenRequest.targets`` has ``default: null          -`` (a stray ``-``): the document does not
   validate as OpenAPI. Corrected to ``default: null``.
2. ``ven`` and ``resource`` are ``allOf`` objectMetadata (objectType ∈ {VEN, RESOURCE, …}) and the
   BL request (objectType ∈ {BL_VEN_REQUEST} / {BL_RESOURCE_REQUEST}): no object can satisfy both.
   Corrected: the server representation takes objectType from objectMetadata (``VEN``,
   ``RESOURCE``), the other properties from the BL request.
3. The ``discriminator`` of ``programRequest.payloadDescriptors`` and of ``notification.object``
   names ``objectType`` without a mapping, so a validator looks for a schema named after the value
   (``EVENT_PAYLOAD_DESCRIPTOR``, ``EVENT``) and finds none. Corrected: the mappings the values mean.

Every operation also documents ``503`` (a dependency is down, or dispatch has not answered an event
write in time; the problem says which, with ``Retry-After``), which the published file omits.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

SPEC_PATH = Path(__file__).with_name("openadr3.yaml")

IMPLEMENTED = {
    "/programs": ["get"],
    "/programs/{programID}": ["get"],
    "/events": ["get", "post"],
    "/events/{eventID}": ["get", "put", "delete"],
    "/reports": ["get", "post"],
    "/reports/{reportID}": ["get"],
    "/subscriptions": ["get", "post"],
    "/subscriptions/{subscriptionID}": ["get", "put", "delete"],
    "/vens": ["get"],
    "/vens/{venID}": ["get"],
    "/resources": ["get"],
    "/resources/{resourceID}": ["get"],
    "/auth/server": ["get"],
    "/auth/token": ["post"],
    "/notifiers": ["get"],
}

UNAVAILABLE = {
    "description": "Service unavailable: a dependency is down, or dispatch did not decide an event write in time "
                   "(the problem's instance names the event to look at). Retry after the Retry-After seconds.",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/problem"}}},
}


def _corrected(document: dict) -> dict:
    schemas = document["components"]["schemas"]
    schemas["BlVenRequest"]["properties"]["targets"]["default"] = None
    for served, request, required in (("ven", "BlVenRequest", ["clientID", "venName"]),
                                      ("resource", "BlResourceRequest", ["clientID", "resourceName", "venID"])):
        properties = {k: v for k, v in schemas[request]["properties"].items() if k != "objectType"}
        schemas[served]["allOf"] = [{"$ref": "#/components/schemas/objectMetadata"},
                                    {"type": "object", "required": required, "properties": properties}]
    schemas["programRequest"]["properties"]["payloadDescriptors"]["items"]["discriminator"]["mapping"] = {
        "EVENT_PAYLOAD_DESCRIPTOR": "#/components/schemas/eventPayloadDescriptor",
        "REPORT_PAYLOAD_DESCRIPTOR": "#/components/schemas/reportPayloadDescriptor",
    }
    schemas["notification"]["properties"]["object"]["discriminator"]["mapping"] = {
        kind.upper(): f"#/components/schemas/{kind}" for kind in ("program", "report", "event", "subscription",
                                                                   "ven", "resource")}
    return document


class _JsonLoader(yaml.SafeLoader):
    """YAML as JSON sees it: ``2023-06-15T09:30:00Z`` in an example stays a string."""


_JsonLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@lru_cache(maxsize=1)
def document() -> dict:
    """The served OpenAPI document (use :func:`served_copy` to change it)."""
    original = _corrected(yaml.load(SPEC_PATH.read_text(), Loader=_JsonLoader))
    paths = {}
    for path, methods in IMPLEMENTED.items():
        item = original["paths"][path]
        kept = {key: value for key, value in item.items() if key in methods or key == "parameters"}
        for method in methods:
            kept[method]["responses"].setdefault("503", UNAVAILABLE)
        paths[path] = kept
    for status, name in (("401", "unauthorized"), ("403", "forbidden")):  # it needs a token (read_all)
        paths["/notifiers"]["get"]["responses"].setdefault(status, {"$ref": f"#/components/responses/{name}"})
    original["paths"] = paths
    original["servers"] = [{"url": "/", "description": "this VTN"}]
    original["info"]["description"] = (
        "gridflex's OpenADR 3.1.0 VTN: the operations of openadr3.yaml it implements (programs are the program "
        "catalogue, read-only; VENs are the providers; resources their enrolled thermostats). See docs/openadr.md.\n\n"
        + original["info"]["description"])
    return original


@lru_cache(maxsize=None)
def validator(schema_name: str) -> OAS30Validator:
    """A validator of one component schema (``eventRequest``, ``reportRequest``, …)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document()["components"]}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


def problems(schema_name: str, body: object) -> list[str]:
    """Every way ``body`` breaks the schema, each naming where (empty: valid)."""
    found = []
    for error in sorted(validator(schema_name).iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(part) for part in error.absolute_path) or "(body)"
        found.append(f"{where}: {_short(error.message)}")
    return found[:20]


def _short(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."


def served_copy() -> dict:
    return copy.deepcopy(document())
