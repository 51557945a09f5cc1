"""What the dispatch projection writes for a batch of instructions and acknowledgments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gridflex.batch import InputRecord
from services.dispatch.projection import delivery_rows

ISSUED = datetime(2025, 7, 16, 17, tzinfo=timezone.utc)


def instruction(action: str, issued_at: datetime, offset: int) -> InputRecord:
    value = {"event_id": "EV-1", "thermostat_serial": "T-1", "service_account_id": "SA-1",
             "program_id": "sce-sep-2025", "action": action, "precool_start": None, "issued_at": issued_at}
    return InputRecord("partner.energyhub.dispatch.v1", 0, offset, 0, b"T-1", b"", value)


def test_a_schedule_and_its_update_in_one_batch_keep_when_the_schedule_was_issued():
    rows = delivery_rows([instruction("SCHEDULE", ISSUED, 0), instruction("UPDATE", ISSUED, 1)])
    [row] = rows.instructions.values()
    assert row[5] == "UPDATE" and row[7] == ISSUED and row[8] == ISSUED


def test_an_update_read_before_its_schedule_still_leaves_the_update_as_the_latest():
    later = ISSUED + timedelta(minutes=5)
    rows = delivery_rows([instruction("UPDATE", later, 0), instruction("SCHEDULE", ISSUED, 1)])
    [row] = rows.instructions.values()
    assert (row[5], row[7], row[8]) == ("UPDATE", ISSUED, later)


def test_an_update_alone_does_not_say_when_the_thermostat_was_first_instructed():
    [row] = delivery_rows([instruction("UPDATE", ISSUED, 0)]).instructions.values()
    assert row[7] is None
