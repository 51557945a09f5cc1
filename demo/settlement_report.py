"""The summer's settlement report: what the ledger paid, per program and per event, checked cent
for cent against an oracle worked out here from the services' own inputs.

The oracle reads what the other services published (each performance's reduction, each account's
enrollment periods, each incentive decision) and what the demo itself sent (bill cycle days),
and applies PROGRAMS.md's rules directly: rate × kWh rounded half-up once per line, the Save
Power Days yearly cap in event order, capacity per enrolled summer day per bill period with its
per-period and yearly caps, a sign-up bonus per granted claim. None of settlement's code is
used for it. The ledger is read back through its Postgres views and the settlement HTTP API,
with an operator's token and with a provider's (which must see its own customers only).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import aiohttp
import asyncpg

from gridflex.calendar import LOCAL_ZONE, bill_period
from gridflex.money import from_cents, to_cents
from gridflex.programs import ProgramCatalogue

from demo.report import Checks, heading, mark, table
from demo.summer import FOLLOWED, OFFLINE, OVERRIDE, SEP, SummerPlan
from demo.summer_phase import SummerOutcome

SHORT = {"sce-sep-2025": "SEP", "sce-save-power-days": "SPD", "ohm-hours": "OHM"}


@dataclass
class LedgerReadback:
    lines: list[dict]
    unbalanced: int
    entries_total: int
    statements: int
    statement_cents: int
    customer_credits_cents: int
    last_closed: date | None
    api: dict = field(default_factory=dict)  # what the HTTP API answered, by question


async def read_ledger(database_url: str, api_url: str, operator_token: str, provider_tokens: dict[str, str],
                      plan: SummerPlan, event_ids: list[str]) -> LedgerReadback:
    connection = await asyncpg.connect(database_url)
    try:
        lines = [dict(row) for row in await connection.fetch(
            "SELECT line_id, service_account_id, program_id, provider_id, credit_type, event_id, bill_period_start,"
            " bill_period_end, amount_cents, reverses_line_id, cause::text AS cause, posted_at FROM ledger_lines ORDER BY line_id")]
        for line in lines:
            line["cause"] = json.loads(line["cause"])
        unbalanced = await connection.fetchval(
            "SELECT count(*) FROM (SELECT line_id FROM ledger_entries GROUP BY line_id"
            " HAVING sum(amount_cents) <> 0 OR count(*) <> 2) unbalanced")
        entries_total = await connection.fetchval("SELECT coalesce(sum(balance_cents), 0)::bigint FROM ledger_balances")
        statements = await connection.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(total_cents), 0)::bigint AS cents FROM bill_statements")
        credits = await connection.fetchval("SELECT coalesce(sum(amount_cents), 0)::bigint FROM customer_credits")
        last_closed = await connection.fetchval("SELECT last_closed_day FROM settlement_closes")
    finally:
        await connection.close()
    readback = LedgerReadback(lines, unbalanced, entries_total, statements["n"], statements["cents"], credits,
                              last_closed)
    operator = {"Authorization": f"Bearer {operator_token}"}
    async with aiohttp.ClientSession(api_url) as http:
        async def get(path: str, headers: dict) -> tuple[int, object]:
            async with http.get(path, headers=headers) as response:
                text = await response.text()
                body = json.loads(text) if response.content_type == "application/json" else text
                return response.status, body

        for event_id in event_ids:
            readback.api[("event", event_id)] = await get(f"/v1/events/{event_id}/settlement", operator)
        readback.api["totals"] = await get("/v1/programs/totals?year=2025", operator)
        readback.api["csv"] = await get("/v1/exports/customer-credits.csv", operator)
        showcase = statement_showcase(plan, lines)
        for account_id, start in showcase:
            readback.api[("statement", account_id)] = await get(
                f"/v1/accounts/{account_id}/statements/{start.isoformat()}", operator)
        for provider, token in provider_tokens.items():
            own = {"Authorization": f"Bearer {token}"}
            readback.api[("totals", provider)] = await get("/v1/programs/totals?year=2025", own)
            other = next((line for line in lines if line["provider_id"] not in (None, provider)), None)
            if other is not None:
                readback.api[("foreign", provider)] = await get(
                    f"/v1/accounts/{other['service_account_id']}/statements/{other['bill_period_start'].isoformat()}", own)
        readback.api["anonymous"] = await get("/v1/programs/totals", {})
    return readback


def statement_showcase(plan: SummerPlan, lines: list[dict]) -> list[tuple[str, date]]:
    """Statements worth showing: the big house's period where the $60 cap bit, and a Smart Energy
    Program account's period with capacity credit and its sign-up bonus."""
    chosen = []
    big = plan.accounts[len(plan.accounts) - len(plan.new_accounts)].service_account_id
    capped = [line for line in lines if line["service_account_id"] == big and line["cause"].get("caps_applied")]
    big_lines = capped or [line for line in lines if line["service_account_id"] == big]
    if big_lines:
        chosen.append((big, big_lines[0]["bill_period_start"]))
    periods = defaultdict(set)
    for line in lines:
        if line["program_id"] == SEP:
            periods[(line["service_account_id"], line["bill_period_start"])].add(line["credit_type"])
    both = sorted(key for key, types in periods.items() if {"CAPACITY", "SIGNUP_BONUS"} <= types)
    if both:
        chosen.append(both[0])
    return chosen


# -- the oracle -----------------------------------------------------------------------------------


def final_performances(performances: list[dict]) -> dict[tuple[str, str], dict]:
    """(event, account) → its latest revision."""
    final: dict[tuple[str, str], dict] = {}
    for record in sorted(performances, key=lambda r: r["revision"]):
        final[(record["event_id"], record["service_account_id"])] = record
    return final


def energy_cents(record: dict, programs: ProgramCatalogue) -> int:
    terms = programs[record["program_id"]].credits.energy
    if terms is None or record["status"] != "SETTLEABLE":
        return 0
    return to_cents(Decimal(record["reduction_kwh"]) * terms.per_kwh)


def expected_energy(performances: list[dict], programs: ProgramCatalogue, event_starts: dict[str, object]
                    ) -> dict[tuple[str, str], int]:
    """(event, account) → net cents the ledger should hold: the final performance's credit, with the
    yearly cap taken in the order of the events."""
    final = final_performances(performances)
    used: Counter = Counter()
    expected = {}
    for (event_id, account), record in sorted(final.items(), key=lambda item: (event_starts[item[0][0]], item[0][1])):
        cents = energy_cents(record, programs)
        cap = programs[record["program_id"]].credits.energy
        if cap is not None and cap.cap_per_year is not None:
            scope = (account, record["program_id"], event_starts[event_id].year)
            cents = max(0, min(cents, to_cents(cap.cap_per_year) - used[scope]))
            used[scope] += cents
        if cents:
            expected[(event_id, account)] = cents
    return expected


def enrolled_days(states: list[dict], program_id: str) -> dict[str, set[date]]:
    """Account → the days it had at least one thermostat in effect (the latest state of each account)."""
    latest = {state["service_account_id"]: state for state in states}
    days: dict[str, set[date]] = defaultdict(set)
    for account, state in latest.items():
        for period in state["enrollments"]:
            if period["program_id"] != program_id:
                continue
            day, end = period["effective_from"], period["effective_to"] or date(period["effective_from"].year, 12, 31)
            while day < end or (period["effective_to"] is None and day <= end):
                days[account].add(day)
                day += timedelta(days=1)
    return days


def expected_capacity(states: list[dict], cycle_days: dict[str, int], programs: ProgramCatalogue,
                      last_closed: date) -> dict[tuple[str, date], int]:
    """(account, bill period start) → capacity cents, for every closed period with enrolled summer days."""
    program = programs[SEP]
    terms, season = program.credits.capacity, program.credits.season
    expected = {}
    for account, days in sorted(enrolled_days(states, SEP).items()):
        summer = sorted(day for day in days if season.contains(day))
        year_used = 0
        periods: dict[tuple[date, date], int] = Counter(bill_period(day, cycle_days[account]) for day in summer)
        for (start, end), count in sorted(periods.items()):
            if end > last_closed:
                continue
            cents = to_cents(count * terms.per_season_day)
            if terms.cap_per_bill_period is not None:
                cents = min(cents, to_cents(terms.cap_per_bill_period))
            if terms.cap_per_year is not None:
                cents = min(cents, to_cents(terms.cap_per_year) - year_used)
            year_used += cents
            if cents:
                expected[(account, start)] = cents
    return expected


def expected_bonuses(incentives: list[dict]) -> dict[str, int]:
    """Account → net sign-up bonus cents: each claim's latest outcome, GRANTED paid, the rest not."""
    latest = {}
    for decision in sorted(incentives, key=lambda d: d["decided_at"]):
        latest[decision["claim_id"]] = decision
    expected: Counter = Counter()
    for decision in latest.values():
        if decision["kind"] == "SIGNUP_BONUS" and decision["outcome"] == "GRANTED":
            expected[decision["service_account_id"]] += to_cents(decision["amount"])
    return dict(expected)


# -- the report -----------------------------------------------------------------------------------


class SettlementReport(Checks):
    def __init__(self, plan: SummerPlan, outcome: SummerOutcome, ledger: LedgerReadback, programs: ProgramCatalogue,
                 cycle_days: dict[str, int], day_event: tuple[str, str], suffix: str):
        super().__init__()
        self.plan, self.outcome, self.ledger, self.programs = plan, outcome, ledger, programs
        self.cycle_days, self.suffix = cycle_days, suffix
        self.event_programs = {event.event_id: event.program_id for event in plan.events}
        self.event_programs[day_event[0]] = day_event[1]
        self.lifecycle = {}
        for record in outcome.lifecycle:
            self.lifecycle[record["event_id"]] = record  # the latest of each event
        self.starts = {event_id: record["start"] for event_id, record in self.lifecycle.items()}
        self.final = final_performances(outcome.performances)
        self.expected_energy = expected_energy(
            [r for r in outcome.performances if r["event_id"] in self.starts], programs, self.starts)
        self.expected_capacity = expected_capacity(outcome.states, cycle_days, programs, ledger.last_closed)
        self.expected_bonuses = expected_bonuses(outcome.incentives)
        # What the ledger holds, net of reversals: energy by (event, account), capacity by (account,
        # bill period start), bonuses by account.
        self.energy, self.capacity, self.bonuses = Counter(), Counter(), Counter()
        for line in ledger.lines:
            if line["credit_type"] in ("ENERGY", "REWARD"):
                self.energy[(line["event_id"], line["service_account_id"])] += line["amount_cents"]
            elif line["credit_type"] == "CAPACITY":
                self.capacity[(line["service_account_id"], line["bill_period_start"])] += line["amount_cents"]
            elif line["credit_type"] == "SIGNUP_BONUS":
                self.bonuses[line["service_account_id"]] += line["amount_cents"]
        self._verify()

    # -- checks ---------------------------------------------------------------------------------

    def _verify(self) -> None:
        o, ledger = self.outcome, self.ledger
        energy = {key: cents for key, cents in self.energy.items() if cents}
        self.check(f"energy credits: the ledger's net per event and account equals the oracle for all "
                   f"{len(self.expected_energy)} credited (rate × kWh half-up, $60 Save Power Days cap in event order)",
                   energy == self.expected_energy)
        capacity = {key: cents for key, cents in self.capacity.items() if cents}
        self.check(f"capacity credits: {len(self.expected_capacity)} closed bill periods, each as the oracle "
                   "(enrolled summer days × $0.40984, ≤ $12.50 a period, ≤ $50 a year)", capacity == self.expected_capacity)
        bonuses = {account: cents for account, cents in self.bonuses.items() if cents}
        self.check(f"sign-up bonuses: {len(self.expected_bonuses)} accounts paid $75 once per granted, uncancelled claim",
                   bonuses == self.expected_bonuses)
        self.check(f"every ledger line has two entries that balance ({len(ledger.lines):,} lines), and the ledger "
                   "sums to zero", ledger.unbalanced == 0 and ledger.entries_total == 0)
        total = sum(line["amount_cents"] for line in ledger.lines)
        self.check(f"the customer_credits view (CONTRACTS.md) sums to the ledger's lines: {from_cents(total)}",
                   ledger.customer_credits_cents == total)
        self.check(f"every bill period closed to {self.plan.close_until} has its statement; statements total the "
                   "lines of closed periods", ledger.statement_cents == sum(
                       line["amount_cents"] for line in ledger.lines if line["bill_period_end"] <= ledger.last_closed))
        changed = self._changed_by_revision()
        reversals = [line for line in ledger.lines if line["reverses_line_id"] is not None]
        self.check(f"{len(changed)} performance revision(s) that changed a credit posted one reversal and one new line "
                   "each, never a second credit", len(reversals) == len(changed)
                   and all(self.energy[key] == self.expected_energy.get(key, 0) for key in changed))
        for event, account in self.plan.late:
            record = self.final.get((event.event_id, account))
            self.check(f"{account}'s reads of {event.day} arrived {3} days late: its {event.event_id} performance "
                       "waited for them and settled", record is not None and record["status"] == "SETTLEABLE")
        for event, account in self.plan.revised:
            revisions = sorted(r["revision"] for r in o.performances
                               if r["event_id"] == event.event_id and r["service_account_id"] == account)
            self.check(f"{account}'s corrected reads revised its {event.event_id} performance "
                       f"(revisions {revisions})", revisions[-1:] == [1] if revisions else False)
        self._verify_participants()
        self._verify_refusals()
        self._verify_api()

    def _changed_by_revision(self) -> list[tuple[str, str]]:
        by_key = defaultdict(list)
        for record in self.outcome.performances:
            by_key[(record["event_id"], record["service_account_id"])].append(record)
        changed = []
        for key, records in by_key.items():
            records.sort(key=lambda r: r["revision"])
            credits = [energy_cents(r, self.programs) for r in records]
            if len(records) > 1 and credits[0] and credits[-1] != credits[0]:
                changed.append(key)
        return changed

    def _verify_participants(self) -> None:
        for event in self.plan.events:
            expected = {p.thermostat.service_account_id for p in self.plan.participants(event)}
            got = {account for (event_id, account) in self.final if event_id == event.event_id}
            if expected != got:
                self.check(f"{event.event_id}: a performance for each of its {len(expected)} enrolled accounts "
                           f"(got {len(got)})", False)
                return
        self.check(f"every summer event has one performance per enrolled account "
                   f"({sum(len({p.thermostat.service_account_id for p in self.plan.participants(e)}) for e in self.plan.events)} in all)",
                   True)
        overrides = sum(1 for p in self.plan.participations if p.behaviour == OVERRIDE)
        seen = sum(1 for status in self.outcome.device_statuses
                   if status["change"] == "OVERRIDE" and status["event_id"] in self.event_programs)
        self.check(f"telemetry reported every customer override during the summer's events ({overrides})",
                   seen == overrides)

    def _verify_refusals(self) -> None:
        letters = defaultdict(list)
        for letter in self.outcome.dead_letters:
            letters[(letter["source_topic"].removesuffix(self.suffix), letter["source_partition"],
                     letter["source_offset"])].append(letter)
        for record in self.plan.malformed:
            found = letters.get((record.topic, *record.position), []) if record.position else []
            services = sorted({letter["service"] for letter in found if letter["reason_code"] == record.dead_letter})
            self.check(f"{record.kind} on {record.topic}: dead letter {record.dead_letter} "
                       f"(from {', '.join(services) or 'no service'})", bool(services))
        sent = {(record.topic, *record.position) for day in self.plan.days for record in day.records
                if record.position and not record.dead_letter}
        wrongly = [key for key in letters if key in sent]
        self.check("no clean record of the summer went to the dead-letter topic", not wrongly)
        for request in self.plan.rejected_events:
            record = self.lifecycle.get(request.value["event_id"])
            codes = {failure["code"] for failure in record["failures"]} if record else set()
            self.check(f"{request.value['event_id']} for {request.value['program_id']}: REJECTED with UNKNOWN_PROGRAM",
                       record is not None and record["status"] == "REJECTED" and "UNKNOWN_PROGRAM" in codes)

    def _verify_api(self) -> None:
        api, lines = self.ledger.api, self.ledger.lines
        good = 0
        for event_id in self.event_ids:
            status, body = api[("event", event_id)]
            settleable = sum(1 for (e, _), r in self.final.items() if e == event_id and r["status"] == "SETTLEABLE")
            net = sum(line["amount_cents"] for line in lines if line["event_id"] == event_id)
            good += status == 200 and body["participants"] == settleable and body["ledger"]["net_cents"] == net
        self.check(f"GET /v1/events/{{id}}/settlement: participants and net credit as the ledger, for all "
                   f"{len(self.event_ids)} events", good == len(self.event_ids))
        status, text = api["csv"]
        rows = list(csv.DictReader(io.StringIO(text))) if status == 200 else []
        self.check(f"the billing export (CSV) has one row per line, {len(rows):,}, and the same total",
                   len(rows) == len(lines) and sum(int(r["amount_cents"]) for r in rows) == sum(
                       line["amount_cents"] for line in lines))
        for provider in sorted(p for key in api if isinstance(key, tuple) and key[0] == "totals" for p in key[1:]):
            status, body = api[("totals", provider)]
            own = sum(line["amount_cents"] for line in lines if line["provider_id"] == provider)
            seen = sum(row["amount_cents"] for row in body["totals"]) if status == 200 else None
            foreign = api.get(("foreign", provider), (404, None))[0]
            self.check(f"{provider}'s token sees its own customers' credits only ({from_cents(own)}), and another "
                       f"provider's statement is 404 to it", seen == own and "programs" not in body and foreign == 404)
        self.check("no token: 401", api["anonymous"][0] == 401)

    @property
    def event_ids(self) -> list[str]:
        return sorted(self.event_programs, key=lambda e: (self.starts.get(e) is None, self.starts.get(e), e))

    # -- tables ---------------------------------------------------------------------------------

    def event_rows(self) -> list[dict]:
        rows = []
        for event_id in self.event_ids:
            event = next((e for e in self.plan.events if e.event_id == event_id), None)
            behaviours = Counter(p.behaviour for p in self.plan.participants(event)) if event else Counter()
            records = [r for (e, _), r in self.final.items() if e == event_id]
            settled = [r for r in records if r["status"] == "SETTLEABLE"]
            lines = [line for line in self.ledger.lines if line["event_id"] == event_id]
            start = self.starts.get(event_id)
            lifecycle = self.lifecycle.get(event_id, {})
            rows.append({
                "event_id": event_id, "program": SHORT.get(self.event_programs[event_id], self.event_programs[event_id]),
                "when": (f"{start.astimezone(LOCAL_ZONE):%a %m-%d %H:%M}–{lifecycle['end'].astimezone(LOCAL_ZONE):%H:%M}"
                         if start else "-"),
                "followed": behaviours[FOLLOWED], "overrode": behaviours[OVERRIDE], "offline": behaviours[OFFLINE],
                "accounts": len(records), "settled": len(settled),
                "baseline": sum((Decimal(r["baseline_kwh"]) for r in settled), Decimal(0)),
                "actual": sum((Decimal(r["actual_kwh"]) for r in settled), Decimal(0)),
                "reduction": sum((Decimal(r["reduction_kwh"]) for r in settled), Decimal(0)),
                "credits": sum(line["amount_cents"] for line in lines),
                "capped": sum(1 for line in lines if line["cause"].get("caps_applied") and line["amount_cents"] > 0),
                "reversals": sum(1 for line in lines if line["reverses_line_id"] is not None),
            })
        return rows

    def program_rows(self) -> list[dict]:
        status, body = self.ledger.api["totals"]
        year = {row["program_id"]: row for row in body.get("programs", [])} if status == 200 else {}
        rows = []
        for program_id in sorted({line["program_id"] for line in self.ledger.lines} | {SEP}):
            lines = [line for line in self.ledger.lines if line["program_id"] == program_id]
            by_type = Counter()
            for line in lines:
                by_type[line["credit_type"]] += line["amount_cents"]
            status_row = year.get(program_id, {})
            rows.append({
                "program": program_id, "accounts": len({line["service_account_id"] for line in lines}),
                "events": sum(1 for p in self.event_programs.values() if p == program_id),
                "event_hours": Decimal(status_row["event_hours_used"]).normalize() if status_row else None,
                "energy": by_type["ENERGY"] + by_type["REWARD"], "capacity": by_type["CAPACITY"],
                "bonuses": by_type["SIGNUP_BONUS"] + by_type["REBATE"], "total": sum(by_type.values()),
                "fund_left": status_row.get("bonus_fund_left_cents"),
            })
        return rows

    def render(self) -> str:
        out = [heading("Settlement: the summer of 2025 in the ledger")]
        out.append(f"\n  {len(self.plan.events) + 1} events on 3 programs, {len(self.ledger.lines):,} ledger lines, "
                   f"{self.ledger.statements:,} statements; bill periods closed to {self.ledger.last_closed} "
                   f"(the summer phase took {self.outcome.elapsed_s:.0f} s)\n")
        out.append(table(
            ["event", "prog", "when (local)", "followed", "overrode", "offline", "settled", "baseline kWh",
             "actual kWh", "reduction kWh", "credits", "capped", "reversals"],
            [[r["event_id"], r["program"], r["when"], r["followed"] or "", r["overrode"] or "", r["offline"] or "",
              f"{r['settled']}/{r['accounts']}", f"{r['baseline']:,.1f}", f"{r['actual']:,.1f}",
              f"{r['reduction']:,.1f}", f"${from_cents(r['credits']):,}", r["capped"] or "", r["reversals"] or ""]
             for r in self.event_rows()], right={3, 4, 5, 6, 7, 8, 9, 10, 11, 12}))
        out.append("")
        programs = self.program_rows()
        out.append(table(
            ["program", "accounts credited", "events", "event hours", "energy / reward", "capacity", "bonuses",
             "total", "bonus fund left"],
            [[r["program"], r["accounts"], r["events"], r["event_hours"] or "-", f"${from_cents(r['energy']):,}",
              f"${from_cents(r['capacity']):,}", f"${from_cents(r['bonuses']):,}", f"${from_cents(r['total']):,}",
              f"${from_cents(r['fund_left']):,}" if r["fund_left"] is not None else "-"] for r in programs]
            + [["total", len({line["service_account_id"] for line in self.ledger.lines}), "", "",
                f"${from_cents(sum(r['energy'] for r in programs)):,}",
                f"${from_cents(sum(r['capacity'] for r in programs)):,}",
                f"${from_cents(sum(r['bonuses'] for r in programs)):,}",
                f"${from_cents(sum(r['total'] for r in programs)):,}", ""]],
            right={1, 2, 3, 4, 5, 6, 7, 8}))
        for (kind, account), (status, body) in ((k, v) for k, v in self.ledger.api.items()
                                                if isinstance(k, tuple) and k[0] == "statement"):
            if status != 200:
                continue
            out.append(f"\n  statement of {account}, bill period {body['bill_period_start']} to {body['bill_period_end']} "
                       f"({body['status']}): ${body['total']}")
            for line in body["lines"]:
                out.append(f"    {line['credit_type']:<13} {line['event_id'] or '':<20} {'$' + line['amount']:>9}  "
                           f"{describe_cause(line['cause'])}")
        out.append(heading("Settlement checks"))
        out += [f"  {mark(check.ok)} {check.what}" for check in self.checks]
        return "\n".join(out)


def describe_cause(cause: dict) -> str:
    """A line's cause in a few words: how it was computed, and the caps that cut it."""
    parts = [cause.get("computed") or cause.get("rule", "")]
    for cap in cause.get("caps_applied") or []:
        parts.append(f"{cap['cap'].replace('_', ' ')} cap ${cap['limit']} (${cap['already_paid']} paid before): "
                     f"${cap['reduced_from']} → ${cap['reduced_to']}")
    return "; ".join(part for part in parts if part)
