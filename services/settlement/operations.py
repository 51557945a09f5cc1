"""What operators ask of the ledger (the ``gridflex accounts`` command): an account's bill
periods and one statement, each line with the rule and arithmetic that produced it."""

from __future__ import annotations

import json
from datetime import date

from gridflex.settings import ServiceSettings
from services.settlement.api import dollars
from services.settlement.ledger import Ledger


async def statement_report(settings: ServiceSettings, service_account_id: str,
                           bill_period_start: date | None) -> list[str] | None:
    """The account's bill periods (total, open or closed), or with ``bill_period_start`` that
    period's lines and causes; None when the ledger has nothing for it."""
    ledger = Ledger(settings.database_url)
    try:
        if bill_period_start is None:
            periods = await ledger.bill_periods(service_account_id)
            if not periods:
                return None
            return [f"{'bill period':<23} {'status':<6} {'lines':>5} {'credit $':>10}"] + [
                f"{row['bill_period_start']} → {row['bill_period_end']} {'CLOSED' if row['closed_at'] else 'OPEN':<6} "
                f"{row['line_count']:>5} {dollars(row['total_cents']):>10}" for row in periods]
        lines, closed = await ledger.statement(service_account_id, bill_period_start)
    finally:
        await ledger.close()
    if not lines:
        return None
    total = sum(line["amount_cents"] for line in lines)
    report = [f"{service_account_id} bill period {bill_period_start} → {lines[0]['bill_period_end']}: "
              f"${dollars(total)}, " + (f"closed {closed['closed_at'].isoformat()}" if closed else "open")]
    for line in lines:
        cause = json.loads(line["cause"])
        what = line["event_id"] or "-"
        reverses = f" (reverses line {line['reverses_line_id']})" if line["reverses_line_id"] else ""
        report.append(f"  line {line['line_id']}  {line['program_id']}  {line['credit_type']:<12} {what:<28} "
                      f"{dollars(line['amount_cents']):>8}{reverses}")
        report.append(f"      {cause.get('rule', '')}: {cause.get('computed', '')}".rstrip(": "))
    return report
