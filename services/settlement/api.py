"""The settlement API: statements, event settlements, program totals and the billing export,
read from the ledger (JSON and CSV over HTTP on the service's web server).

A bearer token says who calls: a provider (``gridflex partner credential``) sees only the lines
its own enrolled thermostats earned; an operator (``gridflex operator credential``) sees every
account. The routes are documented in ``openapi.yaml`` beside this module, served at
``/openapi.json``. Tokens and account data never go to the logs.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import yaml
from aiohttp.web import Request, Response, json_response

from gridflex.db import Caller, json_ready
from gridflex.programs import ProgramCatalogue
from gridflex.streaming import ServiceRuntime
from gridflex.web import Refused, add_route, bearer_token, error_response, unauthorized
from services.settlement.ledger import Ledger

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
EXPORT_COLUMNS = ["service_account_id", "program_id", "credit_type", "event_id", "bill_period_start",
                  "bill_period_end", "amount_cents", "amount", "posted_at", "entry_id"]


def dollars(cents: int | None) -> str:
    return str((Decimal(cents or 0) / 100).quantize(Decimal("0.01")))


def parse_date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Refused(error_response(400, "invalid_date", f"{name} must be a date (YYYY-MM-DD), not {value!r}")) from None


def add_routes(runtime: ServiceRuntime, ledger: Ledger, programs: ProgramCatalogue) -> None:
    """Register the settlement API (documented in openapi.yaml) on the service's web server."""
    app = runtime.app
    document = json.dumps(yaml.safe_load(OPENAPI_PATH.read_text()))

    async def caller(request: Request) -> Caller:
        token = bearer_token(request.headers.get("Authorization"))
        who = await ledger.caller_of_token(token) if token else None
        if who is None:
            raise unauthorized(token)
        return who

    async def account_statements(request: Request, service_account_id: str) -> Response:
        who = await caller(request)
        rows = await ledger.bill_periods(service_account_id, who.provider_id)
        if not rows:
            raise Refused(error_response(404, "not_found", "no credits on this account that you may read"))
        return json_response({"service_account_id": service_account_id, "bill_periods": [
            {"bill_period_start": row["bill_period_start"].isoformat(), "bill_period_end": row["bill_period_end"].isoformat(),
             "status": "CLOSED" if row["closed_at"] else "OPEN", "line_count": row["line_count"],
             "total_cents": row["total_cents"], "total": dollars(row["total_cents"]),
             "url": f"/v1/accounts/{service_account_id}/statements/{row['bill_period_start'].isoformat()}"}
            for row in rows]})

    async def account_statement(request: Request, service_account_id: str, bill_period_start: str) -> Response:
        who = await caller(request)
        start = parse_date(bill_period_start, "bill_period_start")
        lines, closed = await ledger.statement(service_account_id, start, who.provider_id)
        if not lines:
            raise Refused(error_response(404, "not_found", "no statement for this account and bill period that you may read"))
        total = sum(line["amount_cents"] for line in lines)
        return json_response({
            "service_account_id": service_account_id, "bill_period_start": start.isoformat(),
            "bill_period_end": lines[0]["bill_period_end"].isoformat(),
            "status": "CLOSED" if closed else "OPEN",
            "closed_at": json_ready(closed["closed_at"]) if closed else None,
            "total_cents": total, "total": dollars(total),
            "lines": [{
                "line_id": line["line_id"], "entry_id": line["entry_id"], "program_id": line["program_id"],
                "provider_id": line["provider_id"], "credit_type": line["credit_type"], "event_id": line["event_id"],
                "amount_cents": line["amount_cents"], "amount": dollars(line["amount_cents"]),
                "reverses_line_id": line["reverses_line_id"], "posted_at": json_ready(line["posted_at"]),
                "cause": json.loads(line["cause"]),
            } for line in lines],
        })

    async def event_settlement(request: Request, event_id: str) -> Response:
        who = await caller(request)
        pool = await ledger.pool()
        results = await pool.fetch(
            "SELECT r.program_id, r.status, count(*) AS accounts, sum(r.baseline_kwh) AS baseline_kwh,"
            " sum(r.actual_kwh) AS actual_kwh, sum(r.reduction_kwh) AS reduction_kwh,"
            " sum(r.earned_cents)::bigint AS earned_cents, sum(r.paid_cents)::bigint AS paid_cents,"
            " count(*) FILTER (WHERE jsonb_array_length(coalesce(r.detail, l.cause)->'caps_applied') > 0) AS capped"
            " FROM settlement_results r LEFT JOIN ledger_lines l ON l.line_id = r.line_id"  # a line holds its inputs
            " WHERE r.event_id = $1 AND ($2::text IS NULL OR EXISTS ("
            "   SELECT 1 FROM settlement_accounts a WHERE a.service_account_id = r.service_account_id"
            "   AND a.enrollments @> jsonb_build_array(jsonb_build_object('provider_id', $2::text))))"
            " GROUP BY r.program_id, r.status ORDER BY r.status", event_id, who.provider_id)
        if not results:
            raise Refused(error_response(404, "not_found", f"no settled results for event {event_id!r} that you may read"))
        lines = await pool.fetchrow(
            "SELECT count(*) AS lines, coalesce(sum(amount_cents), 0)::bigint AS net_cents,"
            " count(*) FILTER (WHERE amount_cents < 0) AS reversals FROM ledger_lines"
            " WHERE event_id = $1 AND ($2::text IS NULL OR provider_id = $2)", event_id, who.provider_id)
        return json_response({
            "event_id": event_id, "program_id": results[0]["program_id"],
            "participants": sum(row["accounts"] for row in results if row["status"] == "SETTLEABLE"),
            "by_status": [{
                "status": row["status"], "accounts": row["accounts"],
                "baseline_kwh": _number(row["baseline_kwh"]), "actual_kwh": _number(row["actual_kwh"]),
                "reduction_kwh": _number(row["reduction_kwh"]), "earned": dollars(row["earned_cents"]),
                "paid": dollars(row["paid_cents"]), "accounts_capped": row["capped"],
            } for row in results],
            "ledger": {"lines": lines["lines"], "reversals": lines["reversals"], "net_cents": lines["net_cents"],
                       "net": dollars(lines["net_cents"])},
        })

    async def program_totals(request: Request) -> Response:
        who = await caller(request)
        year = request.query.get("year")
        if year is not None and not year.isdigit():
            raise Refused(error_response(400, "invalid_year", f"year must be a number, not {year!r}"))
        pool = await ledger.pool()
        totals = await pool.fetch(
            "SELECT program_id, credit_type, date_trunc('month', posted_at AT TIME ZONE 'America/Los_Angeles')::date"
            " AS month, count(*) AS line_count, count(DISTINCT service_account_id) AS accounts,"
            " sum(amount_cents)::bigint AS amount_cents FROM ledger_lines"
            " WHERE ($1::text IS NULL OR provider_id = $1) GROUP BY 1, 2, 3 ORDER BY 1, 3, 2", who.provider_id)
        if year is not None:
            totals = [row for row in totals if row["month"].year == int(year)]
        body = {"totals": [{**json_ready(dict(row)), "amount": dollars(row["amount_cents"])} for row in totals]}
        if who.provider_id is None:  # fund and hours are program-wide: operators only
            status = await pool.fetch("SELECT * FROM program_year_status WHERE $1::int IS NULL OR year = $1"
                                      " ORDER BY program_id, year", int(year) if year else None)
            body["programs"] = [{
                **{key: _number(value) for key, value in dict(row).items()},
                "bonus_fund": str(programs[row["program_id"]].signup_bonus.fund)
                if row["program_id"] in programs and programs[row["program_id"]].signup_bonus else None,
            } for row in status]
        return json_response(body)

    async def customer_credits_csv(request: Request) -> Response:
        who = await caller(request)
        since = parse_date(request.query.get("bill_period_end_from"), "bill_period_end_from")
        until = parse_date(request.query.get("bill_period_end_to"), "bill_period_end_to")
        pool = await ledger.pool()
        rows = await pool.fetch(
            "SELECT c.* FROM customer_credits c JOIN ledger_entries e ON e.entry_id = c.entry_id"
            " JOIN ledger_lines l ON l.line_id = e.line_id"
            " WHERE ($1::date IS NULL OR c.bill_period_end >= $1) AND ($2::date IS NULL OR c.bill_period_end <= $2)"
            " AND ($3::text IS NULL OR l.provider_id = $3) ORDER BY c.entry_id", since, until, who.provider_id)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for row in rows:
            writer.writerow([row["service_account_id"], row["program_id"], row["credit_type"], row["event_id"] or "",
                             row["bill_period_start"].isoformat(), row["bill_period_end"].isoformat(),
                             row["amount_cents"], dollars(row["amount_cents"]), json_ready(row["posted_at"]),
                             row["entry_id"]])
        return Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="customer-credits.csv"'})

    async def openapi(request: Request) -> Response:
        return Response(text=document, content_type="application/json")

    add_route(app, "get", "/v1/accounts/{service_account_id}/statements", account_statements)
    add_route(app, "get", "/v1/accounts/{service_account_id}/statements/{bill_period_start}", account_statement)
    add_route(app, "get", "/v1/events/{event_id}/settlement", event_settlement)
    add_route(app, "get", "/v1/programs/totals", program_totals)
    add_route(app, "get", "/v1/exports/customer-credits.csv", customer_credits_csv)
    add_route(app, "get", "/openapi.json", openapi)


def _number(value):
    return str(value) if isinstance(value, Decimal) else value
