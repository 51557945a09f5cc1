"""What came out of the enrollment service, measured against what the demo sent, as tables for people.

Everything here reads the service's outputs (its topics, its /metrics and its HTTP API); the
scenario only says what to expect. Effective dates and bill periods are worked out here from the
program file and the tariff calendar, apart from the service's own code.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gridflex.calendar import is_holiday, local_date
from gridflex.topics import CUSTOMER_ACCOUNTS, DEAD_LETTERS, INCENTIVES

from demo.enrollment import (
    ACCEPTED,
    CANCELLED,
    DENIED,
    GRANTED,
    HTTP,
    KAFKA,
    PROVIDERS,
    REJECTED,
    ApiCall,
    EnrollmentCase,
    EnrollmentScenario,
    skipped_days,
)
from demo.report import Checks, heading, mark, table
from demo.scenario import reporting_thermostats

BONUS = "SIGNUP_BONUS"


# -- the service's /metrics -----------------------------------------------------------------------


@dataclass
class EnrollmentMetrics:
    """The counters of one enrollment process that the demo watches."""

    decisions: Counter = field(default_factory=Counter)  # (program, action, outcome) → decisions made
    duplicates: int = 0  # re-delivered requests already decided
    waited: Counter = field(default_factory=Counter)  # result → requests that waited for their account
    incentives: Counter = field(default_factory=Counter)  # (program, kind, outcome) → incentive decisions
    fund_remaining: dict[str, Decimal] = field(default_factory=dict)
    records_in: Counter = field(default_factory=Counter)  # topic → records consumed
    records_out: Counter = field(default_factory=Counter)  # topic → records produced (acknowledged)
    dead_letters: Counter = field(default_factory=Counter)  # (source topic, reason code) → count

    @classmethod
    def parse(cls, text: str) -> "EnrollmentMetrics":
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels, name = sample.labels, sample.name
                if name == "gridflex_enrollment_decisions_total":
                    metrics.decisions[(labels["program"], labels["action"], labels["outcome"])] += int(sample.value)
                elif name == "gridflex_enrollment_duplicate_requests_total":
                    metrics.duplicates += int(sample.value)
                elif name == "gridflex_enrollment_requests_waited_total":
                    metrics.waited[labels["result"]] += int(sample.value)
                elif name == "gridflex_enrollment_incentive_decisions_total":
                    metrics.incentives[(labels["program"], labels["kind"], labels["outcome"])] += int(sample.value)
                elif name == "gridflex_enrollment_bonus_fund_remaining_dollars":
                    metrics.fund_remaining[labels["program"]] = Decimal(str(sample.value)).quantize(Decimal("0.01"))
                elif name == "gridflex_records_in_total":
                    metrics.records_in[labels["topic"]] += int(sample.value)
                elif name == "gridflex_records_out_total":
                    metrics.records_out[labels["topic"]] += int(sample.value)
                elif name == "gridflex_dead_letters_total":
                    metrics.dead_letters[(labels["source_topic"], labels["reason_code"])] += int(sample.value)
        return metrics

    @property
    def decided(self) -> int:
        return sum(self.decisions.values())

    @property
    def incentive_decisions(self) -> int:
        return sum(self.incentives.values())

    @property
    def accounts_read(self) -> int:
        return self.records_in[CUSTOMER_ACCOUNTS]

    @property
    def decisions_out(self) -> int:
        return sum(n for topic, n in self.records_out.items() if topic.endswith(".enrollment-decisions.v1"))

    def outcomes(self, outcome: str) -> int:
        return sum(n for (_, _, decided), n in self.decisions.items() if decided == outcome)

    @property
    def settled(self) -> bool:
        """Every decision, bonus decision and dead letter made so far is acknowledged by Kafka."""
        return (self.decisions_out == self.decided and self.records_out[INCENTIVES] == self.incentive_decisions
                and self.records_out[DEAD_LETTERS] == sum(self.dead_letters.values()))

    @property
    def snapshot(self) -> tuple:
        return (tuple(sorted(self.decisions.items())), tuple(sorted(self.incentives.items())),
                tuple(sorted(self.records_out.items())), tuple(sorted(self.records_in.items())))


# -- what was read back ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class EnrollmentOutputs:
    """The records read back from the enrollment service's topics, and what its API answered."""

    decisions: list[dict]  # every provider's decisions topic
    states: list[dict]  # gridflex.enrollment.state.v1, in log order per account
    incentives: list[dict]
    dead_letters: list[dict]  # the enrollment service's own
    answers: list[tuple[ApiCall, Answer]]
    undecodable: int = 0

    @property
    def latest_states(self) -> dict[str, dict]:
        latest: dict[str, dict] = {}
        for state in self.states:
            latest[state["service_account_id"]] = state
        return latest


# -- the report -----------------------------------------------------------------------------------


def money(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def weekday(day: date) -> str:
    return f"{day:%a %Y-%m-%d}"


def codes(failures: list[dict]) -> tuple[str, ...]:
    return tuple(sorted(failure["code"] for failure in failures))


def bill_period_end(day: date, cycle_day: int) -> date:
    """The last day of the bill period containing ``day`` (cycle days 1-28: every month has one)."""
    if day.day < cycle_day:
        return day.replace(day=cycle_day) - timedelta(days=1)
    following = date(day.year + day.month // 12, day.month % 12 + 1, cycle_day)
    return following - timedelta(days=1)


class EnrollmentReport(Checks):
    def __init__(self, scenario: EnrollmentScenario, metrics: EnrollmentMetrics, outputs: EnrollmentOutputs,
                 telemetry_day: date, api_url: str):
        super().__init__()
        self.scenario = scenario
        self.metrics = metrics
        self.outputs = outputs
        self.telemetry_day = telemetry_day
        self.api_url = api_url
        self.by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for decision in outputs.decisions:
            self.by_key[(decision["provider_id"], decision["request_id"])].append(decision)

    def render(self) -> str:
        return "\n".join([self.decisions(), self.effective_dates(), self.bonuses(), self.states(), self.api()])

    def decision(self, case: EnrollmentCase) -> dict | None:
        found = self.by_key.get(case.key)
        return found[0] if found else None

    # One decision per request, each the one expected.
    def decisions(self) -> str:
        s, m = self.scenario, self.metrics
        sent = Counter(case.channel for case in s.cases)
        distinct = {key: {json.dumps(d, default=str, sort_keys=True) for d in found} for key, found in self.by_key.items()}
        one_each = all(len(distinct.get(case.key, ())) == 1 for case in s.cases)
        unasked = [key for key in self.by_key if s.case(*key) is None]
        self.check(f"exactly one decision per request ({len(distinct)} decided, {len(s.cases)} sent)",
                   one_each and not unasked and len(distinct) == len(s.cases))
        self.check("decision records all decode", self.outputs.undecodable == 0)
        self.check(f"the enrollment service dead-lettered nothing ({len(self.outputs.dead_letters)})",
                   not self.outputs.dead_letters)
        redelivered = len(s.redelivered)
        self.check(f"re-delivered requests recognised ({m.duplicates} counted, {redelivered} sent)",
                   m.duplicates >= redelivered)
        waited = [case for step in s.steps for case in step.decided if case not in step.requests]
        self.check(f"requests that waited for their account: {m.waited['decided']} decided when it came, "
                   f"{m.waited['unknown_account']} rejected UNKNOWN_ACCOUNT",
                   m.waited["decided"] + m.waited["unknown_account"] >= len(waited))

        rows = []
        for outcome in (ACCEPTED, REJECTED):
            seen = Counter(d["provider_id"] for key, found in self.by_key.items() for d in found[:1]
                           if d["outcome"] == outcome)
            expected = sum(1 for case in s.cases if case.outcome == outcome)
            ok = self.check(f"{outcome.lower()}: {sum(seen.values())} (expected {expected})",
                            sum(seen.values()) == expected)
            rows.append([outcome, *(seen[p] for p in PROVIDERS), sum(seen.values()), f"{expected} {mark(ok)}"])

        special = []
        for case in s.cases:
            decision = self.decision(case)
            got = (decision["outcome"], codes(decision["failures"])) if decision else ("none", ())
            ok = self.check(f"{case.provider_id}/{case.request['request_id']} ({case.service_account_id}): "
                            f"{got[0]} {', '.join(got[1])} (expected {case.outcome} {', '.join(case.failures)})",
                            got == (case.outcome, tuple(sorted(case.failures))))
            if case.kind:
                special.append([case.service_account_id, case.provider_id, case.channel, case.action.lower(),
                                case.kind, got[0], ", ".join(got[1]) or "–", mark(ok)])
        examples = {}
        for decision in self.outputs.decisions:
            for failure in decision["failures"]:
                examples.setdefault(failure["code"], failure["message"])
        lines = [
            heading("Enrollment decisions (partner.<provider>.enrollment-decisions.v1)"),
            f"  {len(s.cases)} requests: {sent[KAFKA]} on the providers' Kafka topics (and {redelivered} of them "
            f"re-delivered), {sent[HTTP]} over the HTTP API; {len(distinct)} decided, one decision each "
            f"{mark(one_each and not unasked)}\n",
            table(["outcome", *PROVIDERS, "all", "expected"], rows, right={1, 2, 3, 4}),
            "\n  The requests that are not plain sign-ups, and every rule each failed:\n",
            table(["account", "provider", "via", "action", "case", "decision", "failed rules", ""], special),
            "\n  What the failed rules say (the service's sentence, one example of each):",
        ]
        lines += [f"    {code:<29} {textwrap.shorten(message, 100)}" for code, message in sorted(examples.items())]
        return "\n".join(lines)

    # Effective dates: the n-th business day after the request's local date.
    def effective_dates(self) -> str:
        n = self.scenario.program.enrollment_effective_business_days
        groups: dict[tuple, list[bool]] = defaultdict(list)
        rejected = [d for d in self.outputs.decisions if d["outcome"] == REJECTED]
        self.check("rejected requests carry no effective date", all(d["effective_date"] is None for d in rejected))
        for case in self.scenario.cases:
            decision = self.decision(case)
            if decision is None or decision["outcome"] != ACCEPTED:
                continue
            requested = local_date(decision["requested_at"])
            expected = self.scenario.effective_date(case)
            ok = decision["effective_date"] == expected and requested == case.request_day
            self.check(f"{case.provider_id}/{case.request['request_id']}: effective {decision['effective_date']} "
                       f"(expected {expected}, {n} business days after {case.request_day})", ok)
            groups[(requested, decision["effective_date"], case.action)].append(ok)
        rows = []
        for (requested, effective, action), oks in sorted(groups.items()):
            skipped = skipped_days(requested, effective) if effective else []
            not_counted = ", ".join(f"{day:%a %m-%d}" + (" (holiday)" if is_holiday(day) else "") for day in skipped)
            rows.append([weekday(requested), weekday(effective) if effective else "–", not_counted or "–",
                         action.lower(), len(oks), mark(all(oks))])
        return "\n".join([
            heading(f"Effective dates: the {ordinal(n)} business day after the request "
                    f"({self.scenario.program.id}, local dates)"),
            table(["requested", "effective", "not business days", "action", "accepted", ""], rows, right={4}),
        ])

    # Sign-up bonuses: who got one, who did not and why; the fund.
    def bonuses(self) -> str:
        s = self.scenario
        terms = s.program.signup_bonus
        bonuses = [d for d in self.outputs.incentives if d["kind"] == BONUS and d["program_id"] == s.program.id]
        # A bonus names its enrollment by provider, account and thermostat (each enrolled once here).
        by_enrollment: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        for bonus in bonuses:
            by_enrollment[(bonus["provider_id"], bonus["service_account_id"], bonus["thermostat_serial"])].append(bonus)
        expected = Counter(case.bonus for case in s.cases if case.bonus)
        expected[CANCELLED] = sum(1 for case in s.cases if case.cancels_bonus_of is not None)
        seen = Counter(bonus["outcome"] for bonus in bonuses)
        rows = []
        for outcome in (GRANTED, DENIED, CANCELLED):
            ok = self.check(f"sign-up bonuses {outcome}: {seen[outcome]} (expected {expected[outcome]})",
                            seen[outcome] == expected[outcome])
            rows.append([outcome, seen[outcome], expected[outcome], mark(ok)])

        notable = []
        enrollments = [case for case in s.cases if case.action == "ENROLL"]
        for case in enrollments:
            found = by_enrollment.get((case.provider_id, case.service_account_id, case.serial), [])
            outcomes = [(b["outcome"], codes(b["failures"])) for b in found]
            want = [(case.bonus, tuple(sorted(case.bonus_failures)))] if case.bonus else []
            if case.cancelled_by is not None:
                want.append((CANCELLED, ("CANCELLED",)))
            ok = self.check(f"bonus of {case.provider_id}/{case.request['request_id']}: {outcomes} (expected {want})",
                            sorted(outcomes) == sorted(want))
            for bonus in found:
                if bonus["outcome"] != GRANTED:
                    notable.append(f"  {mark(ok)} {bonus['outcome']:<9} {case.service_account_id}  {case.serial:<13} "
                                   f"{case.kind}")
                    notable += [f"  {'':<37}↳ {f['code']}: {textwrap.shorten(f['message'], 100)}"
                                for f in bonus["failures"]]

        paid = [b for b in bonuses if b["outcome"] == GRANTED]
        cancelled = {b["claim_id"] for b in bonuses if b["outcome"] == CANCELLED}
        kept = [b for b in paid if b["claim_id"] not in cancelled]
        per_account = Counter(b["service_account_id"] for b in kept)
        per_serial = Counter(b["thermostat_serial"] for b in paid)
        sources = {case.serial: case.request["thermostat_source"] for case in s.cases}
        accepted = {(c.provider_id, c.service_account_id, c.serial) for c in enrollments
                    if (d := self.decision(c)) and d["outcome"] == ACCEPTED}
        rules = [
            ("at most one bonus per account", all(n == 1 for n in per_account.values())),
            ("none twice for a thermostat", all(n == 1 for n in per_serial.values())),
            ("none for a utility-program thermostat",
             not any(sources.get(b["thermostat_serial"]) in terms.excluded_thermostat_sources for b in paid)),
            ("claims only for accepted enrollments", all(key in accepted for key in by_enrollment)),
            (f"each {money(terms.amount)}", all(b["amount"] == terms.amount for b in paid)),
        ]
        for what, ok in rules:
            self.check(f"bonus rule: {what}", ok)
        post_ok = []
        for bonus in paid:
            account = s.accounts[bonus["service_account_id"]]
            post_ok.append(bonus["post_on"] == bill_period_end(bonus["effective_date"], account["bill_cycle_day"]))
        self.check("each granted bonus posts at the close of the bill period its enrollment takes effect in",
                   all(post_ok))
        left = terms.fund - terms.amount * len(paid) + terms.amount * len(cancelled)
        reported = self.metrics.fund_remaining.get(s.program.id)
        fund_ok = self.check(f"bonus fund left: {reported} reported, {left} computed", reported == left)
        return "\n".join([
            heading(f"Sign-up bonuses (gridflex.enrollment.incentives.v1): {money(terms.amount)} per new enrollment "
                    f"from a {money(terms.fund)} fund"),
            table(["outcome", "count", "expected", ""], rows, right={1, 2}),
            "",
            *notable,
            "",
            "  " + ", ".join(f"{what} {mark(ok)}" for what, ok in rules) + ";",
            f"  each posts at the close of the bill period its enrollment takes effect in {mark(all(post_ok))} "
            f"(e.g. {paid[0]['effective_date']} → {paid[0]['post_on']})" if paid else "",
            f"  fund: {money(terms.fund)} − {len(paid)} × {money(terms.amount)} + {len(cancelled)} cancelled × "
            f"{money(terms.amount)} = {money(left)}; the service reports {money(reported) if reported else '–'} "
            f"left {mark(fund_ok)}",
        ])

    # The accounts' enrollments as the state topic has them, against what the decisions say.
    def states(self) -> str:
        s = self.scenario
        latest = self.outputs.latest_states
        expected = s.expected_periods()
        periods = {account: {(p["provider_id"], p["thermostat_serial"], p["request_id"], p["effective_from"],
                              p["effective_to"]) for p in state["enrollments"]}
                   for account, state in latest.items()}
        wrong = sorted(account for account in set(expected) | set(periods)
                       if expected.get(account, set()) != periods.get(account, set()))
        self.check(f"enrollment state of every account as the decisions say ({len(wrong)} differ: "
                   f"{', '.join(wrong[:5])})", not wrong)
        day = self.telemetry_day
        in_effect = {(account, serial) for account, found in periods.items() for _, serial, _, start, end in found
                     if start <= day and (end is None or day < end)}
        count = sum(len(found) for found in periods.values())
        ended = Counter(p["end_reason"] for state in latest.values() for p in state["enrollments"] if p["end_reason"])
        reporting = [(provider, serial, next(c.service_account_id for c in s.cases if c.serial == serial))
                     for provider, serial, _ in reporting_thermostats()]
        thermostats_ok = self.check(
            f"the thermostats reporting on {day} are enrolled and in effect that day",
            all((account, serial) in in_effect for _, serial, account in reporting))
        shown = {account for _, _, account in reporting}
        shown |= {c.service_account_id for c in s.cases if c.kind in ("second thermostat", "cancelled")}
        rows = []
        for account in sorted(shown):
            for p in sorted(latest.get(account, {}).get("enrollments", []), key=lambda p: p["effective_from"]):
                effect = (p["effective_from"] <= day and (p["effective_to"] is None or day < p["effective_to"]))
                reports = any(serial == p["thermostat_serial"] for _, serial, _ in reporting)
                rows.append([account, p["provider_id"], p["thermostat_serial"], p["effective_from"],
                             p["effective_to"] or "–", p["end_reason"] or "",
                             ("in effect" if effect else "not in effect") + (", reports its state" if reports else "")])
        return "\n".join([
            heading("Enrollment state (gridflex.enrollment.state.v1): the latest record of each account"),
            f"  {len(self.outputs.states)} records for {len(latest)} accounts: {count} enrollment periods, "
            f"{len(in_effect)} in effect on {weekday(day)}"
            + "".join(f", {n} ended {reason}" for reason, n in sorted(ended.items()))
            + f"; as the decisions say {mark(not wrong)}\n",
            table(["account", "provider", "thermostat", "from", "to", "end", f"on {day}"], rows),
            f"\n  The thermostats reporting their state on {day} are all in effect {mark(thermostats_ok)}.",
        ])

    # What the providers' HTTP API answered.
    def api(self) -> str:
        lines = [heading(f"The providers' HTTP API ({self.api_url}, a bearer token per provider)")]
        shown = None
        for call, answer in self.outputs.answers:
            ok = answer.status == call.status
            if call.case is not None and call.method == "GET" and answer.status == 200:
                decision = self.decision(call.case)
                ok = ok and decision is not None and answer.body["outcome"] == decision["outcome"] and (
                    answer.body["effective_date"] == (decision["effective_date"] and str(decision["effective_date"])))
            if call.periods is not None and answer.status == 200:
                ok = ok and self._account_view_ok(call, answer)
                shown = (call, answer)
            self.check(f"API {call.method} {call.path} as {call.caller or 'nobody'}: {answer.status} "
                       f"(expected {call.status})", ok)
            who = f"{call.caller}'s token" if call.caller else "no token"
            status = f"{answer.status}" if answer.status == call.status else f"{answer.status}, expected {call.status}"
            lines.append(f"  {mark(ok)} {status:<3}  {call.method:<4} {call.path}  ({who})")
            lines.append(f"  {'':<11}↳ {textwrap.shorten(self._summary(call, answer), 110)}")
        if shown:
            call, answer = shown
            lines += [f"\n  {call.method} {call.path} with {call.caller}'s token answered:", render_json(answer.body)]
        return "\n".join(lines)

    def _summary(self, call: ApiCall, answer: Answer) -> str:
        """What the call was for, and what came back."""
        body = answer.body if isinstance(answer.body, dict) else {}
        if "reason" in body:
            got = body["reason"]
        elif call.method == "POST" and "request_id" in body:
            got = f"{call.case.service_account_id} {call.case.serial}, request_id {body['request_id']}"
        elif body.get("status") == "DECIDED":
            got = f"{body['outcome']}, effective {body['effective_date'] or '–'}"
        elif "enrollments" in body:
            got = f"{len(body['enrollments'])} enrollments, {len(body['decisions'])} decisions (below)"
        else:
            got = str(answer.body)
        return f"{call.purpose}: {got}"

    def _account_view_ok(self, call: ApiCall, answer: Answer) -> bool:
        """The view shows the caller's periods as the state topic has them, and its decisions."""
        account = call.path.rsplit("/", 1)[1]
        state = self.outputs.latest_states.get(account, {"enrollments": []})
        own = [{k: str(v) if isinstance(v, date) else v for k, v in p.items()}
               for p in state["enrollments"] if p["provider_id"] == call.caller]
        decided = {d["request_id"] for d in self.outputs.decisions
                   if d["provider_id"] == call.caller and d["service_account_id"] == account}
        body = answer.body

        def canonical(periods: list[dict]) -> list[str]:
            return sorted(json.dumps(period, sort_keys=True) for period in periods)

        return (len(body["enrollments"]) == call.periods and canonical(body["enrollments"]) == canonical(own)
                and {d["request_id"] for d in body["decisions"]} == decided)


def ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def render_json(body: Any, width: int = 110) -> str:
    """A JSON object for people: one line per field, list items one each, wrapped."""
    lines = ["    {"]
    for n, (key, value) in enumerate(body.items()):
        comma = "," if n < len(body) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f'      "{key}": [')
            for i, item in enumerate(value):
                text = json.dumps(item, ensure_ascii=False) + ("," if i < len(value) - 1 else "")
                lines += textwrap.wrap(text, width, initial_indent="        ", subsequent_indent="          ")
            lines.append(f"      ]{comma}")
        else:
            lines.append(f'      "{key}": {json.dumps(value)}{comma}')
    lines.append("    }")
    return "\n".join(lines)
