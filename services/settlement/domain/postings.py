"""From what causes earn to ledger lines (pure): caps in posting order, revisions as a reversal
plus a new line, duplicates as nothing.

Every cause (an account's result in one event, its capacity for one bill period, one bonus) has
at most one line in effect. A later revision of the cause reverses that line and posts what the
revision earns; a revision already settled (a re-delivered record) posts nothing. Caps are
applied in posting order: a line that reaches a cap is reduced to what is left, later lines are
zero and not posted, and a reversal gives its amount back to the caps it counted toward.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from services.settlement.domain.credits import ZERO, Earned


@dataclass(frozen=True)
class PostedLine:
    """A line in effect for a cause (what a reversal needs to know of it)."""

    line_id: int
    amount_cents: int
    cap_year: int
    cap_period_start: date | None
    provider_id: str
    credit_type: str


@dataclass(frozen=True)
class Prior:
    """How a cause last settled: the revision read and the line it left in effect, if any."""

    revision: int
    line: PostedLine | None


@dataclass
class LineDraft:
    """A line to post (its id is given by the ledger when written)."""

    cause_key: str
    idempotency_key: str
    service_account_id: str
    program_id: str
    provider_id: str
    credit_type: str
    event_id: str | None
    bill_period: tuple[date, date]
    cap_year: int
    cap_period_start: date | None
    amount_cents: int  # to the customer; negative for a reversal
    reverses_line_id: int | None
    cause: dict
    line_id: int | None = None


@dataclass
class Settled:
    """What settling one cause produced: its lines (a reversal, a new line, both, or none) and
    the result to remember for the cause."""

    earned: Earned
    lines: list[LineDraft]
    paid_cents: int
    caps_applied: list[dict] = field(default_factory=list)

    @property
    def credit(self) -> LineDraft | None:
        """The new line in effect, if any (the last line, unless it is a reversal)."""
        return self.lines[-1] if self.lines and self.lines[-1].reverses_line_id is None else None


class CapUsage:
    """What lines already posted add up to, per cap scope (loaded from the ledger), kept
    current as this batch posts."""

    def __init__(self, used_cents: dict[tuple, int] | None = None):
        self.used_cents: dict[tuple, int] = defaultdict(int, used_cents or {})

    def apply(self, earned: Earned) -> tuple[int, list[dict]]:
        paid = _cents(earned.amount)
        applied = []
        for cap in earned.caps:
            left = max(_cents(cap.limit) - self.used_cents[cap.scope], 0)
            if paid > left:
                applied.append({
                    "cap": cap.name, "limit": str(cap.limit), "already_paid": _dollars(self.used_cents[cap.scope]),
                    "reduced_from": _dollars(paid), "reduced_to": _dollars(left),
                })
                paid = left
        return paid, applied

    def add(self, scopes: list[tuple], cents: int) -> None:
        for scope in scopes:
            self.used_cents[scope] += cents


def line_scopes(account: str, program: str, credit_type: str, cap_year: int, cap_period_start: date | None) -> list[tuple]:
    """The cap scopes a line counts toward (the same keys :class:`Cap` uses)."""
    scopes = [(account, program, credit_type, "year", cap_year)]
    if cap_period_start is not None:
        scopes.append((account, program, credit_type, "period", cap_period_start))
    return scopes


def settle(earned: Earned, prior: Prior | None, usage: CapUsage, posting_period: tuple[date, date]) -> Settled | None:
    """The lines one cause's revision posts; None when that revision was settled already."""
    if prior is not None and earned.revision <= prior.revision:
        return None
    lines = []
    if prior is not None and prior.line is not None:
        lines.append(reversal(earned, prior, usage, posting_period, "revised"))
    paid, applied = usage.apply(earned)
    if paid > 0:
        period = earned.bill_period or posting_period
        cause = {**earned.detail, "earned": str(earned.amount), "caps_applied": applied, "revision": earned.revision}
        lines.append(LineDraft(
            earned.cause_key, f"{earned.cause_key}#r{earned.revision}", earned.service_account_id, earned.program_id,
            earned.provider_id, earned.credit_type, earned.event_id, period, earned.cap_year,
            earned.cap_period_start, paid, None, cause,
        ))
        usage.add(line_scopes(earned.service_account_id, earned.program_id, earned.credit_type, earned.cap_year,
                              earned.cap_period_start), paid)
    return Settled(earned, lines, paid, applied)


def withdraw(earned: Earned, prior: Prior, usage: CapUsage, posting_period: tuple[date, date], why: str) -> Settled | None:
    """Reverse the line in effect for a cause (a bonus paid in error, cancelled after posting):
    ``earned`` names the cause and the revision that withdraws it."""
    if earned.revision <= prior.revision:
        return None
    lines = [reversal(earned, prior, usage, posting_period, why)] if prior.line is not None else []
    return Settled(earned, lines, 0)


def reversal(earned: Earned, prior: Prior, usage: CapUsage, posting_period: tuple[date, date], why: str) -> LineDraft:
    line = prior.line
    usage.add(line_scopes(earned.service_account_id, earned.program_id, line.credit_type, line.cap_year,
                          line.cap_period_start), -line.amount_cents)
    return LineDraft(
        earned.cause_key, f"{earned.cause_key}#r{prior.revision}/reversed", earned.service_account_id,
        earned.program_id, line.provider_id, line.credit_type, earned.event_id, posting_period, line.cap_year,
        line.cap_period_start, -line.amount_cents, line.line_id,
        {"rule": f"reversal of line {line.line_id} ({why})", "reverses_line_id": line.line_id,
         "reversed_revision": prior.revision, "by_revision": earned.revision, "why": why},
    )


def _cents(amount: Decimal) -> int:
    return int(amount * 100)


def _dollars(cents: int) -> str:
    return str((Decimal(cents) / 100).quantize(ZERO))
