"""Telemetry ingestion rules: every validation rule, revision reconciliation, device changes."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gridflex.intervals import IntervalRevisions
from services.telemetry.domain import (
    MeterInterval,
    Rejection,
    SeenInterval,
    TelemetryLimits,
    Verdict,
    device_changes,
    DeviceSnapshot,
    reconcile,
    validate_meter_read,
    validate_thermostat_state,
)

NOW = datetime(2025, 7, 16, 12, 0, tzinfo=timezone.utc)
LIMITS = TelemetryLimits()


def a_read(**changes) -> dict:
    read = {
        "service_account_id": "SA-1", "meter_id": "M-1", "interval_start": datetime(2025, 7, 15, 23, 0, tzinfo=timezone.utc),
        "interval_seconds": 3600, "value": Decimal("1432"), "unit": "WH", "quality": "ACTUAL", "revision": 0,
        "read_at": datetime(2025, 7, 16, 6, 0, tzinfo=timezone.utc), "source": None,
    }
    return {**read, **changes}


def test_a_valid_read_becomes_a_kwh_interval_on_its_local_day():
    interval = validate_meter_read(a_read(), NOW, LIMITS)
    assert isinstance(interval, MeterInterval)
    assert interval.kwh == Decimal("1.432")
    # 23:00 UTC on July 15 is 16:00 in Los Angeles, the same day.
    assert interval.local_date.isoformat() == "2025-07-15"


def test_kwh_reads_keep_their_value():
    assert validate_meter_read(a_read(unit="kwh", value=Decimal("0.25")), NOW, LIMITS).kwh == Decimal("0.25")


@pytest.mark.parametrize(
    "changes, reason_code",
    [
        ({"service_account_id": " "}, "MISSING_ID"),
        ({"meter_id": ""}, "MISSING_ID"),
        ({"unit": "MWH"}, "UNKNOWN_UNIT"),
        ({"value": Decimal("-0.001")}, "NEGATIVE_VALUE"),
        ({"value": Decimal("NaN")}, "NOT_FINITE"),
        ({"value": Decimal("500001"), "unit": "WH"}, "VALUE_TOO_LARGE"),
        ({"value": Decimal("125.1"), "unit": "KWH", "interval_seconds": 900}, "VALUE_TOO_LARGE"),
        ({"interval_seconds": 1800}, "BAD_INTERVAL_LENGTH"),
        ({"interval_start": datetime(2025, 7, 15, 23, 15, tzinfo=timezone.utc)}, "MISALIGNED_INTERVAL"),
        ({"interval_start": NOW}, "FUTURE_TIMESTAMP"),
        ({"read_at": NOW + timedelta(minutes=6)}, "FUTURE_TIMESTAMP"),
        ({"interval_start": datetime(1999, 12, 31, 23, tzinfo=timezone.utc)}, "TIMESTAMP_TOO_OLD"),
        ({"revision": -1}, "NEGATIVE_REVISION"),
    ],
)
def test_each_rule_rejects_with_its_reason(changes, reason_code):
    result = validate_meter_read(a_read(**changes), NOW, LIMITS)
    assert isinstance(result, Rejection)
    assert result.reason_code == reason_code


def test_an_interval_may_end_up_to_the_clock_skew_after_now():
    # The quarter hour 11:45-12:00 UTC, read at 11:57 (ends 3 min ahead) and at 11:54 (6 min ahead).
    quarter = a_read(interval_start=datetime(2025, 7, 16, 11, 45, tzinfo=timezone.utc), interval_seconds=900,
                     value=Decimal("300"), read_at=datetime(2025, 7, 16, 11, 50, tzinfo=timezone.utc))
    assert isinstance(validate_meter_read(quarter, datetime(2025, 7, 16, 11, 57, tzinfo=timezone.utc), LIMITS), MeterInterval)
    late = validate_meter_read(quarter, datetime(2025, 7, 16, 11, 54, tzinfo=timezone.utc), LIMITS)
    assert late.reason_code == "FUTURE_TIMESTAMP"


def test_every_broken_rule_is_named_in_the_reason():
    result = validate_meter_read(a_read(unit="MWH", value=Decimal("-1"), interval_seconds=60), NOW, LIMITS)
    assert result.reason_code == "UNKNOWN_UNIT"
    assert "MWH" in result.reason and "negative" in result.reason and "900 or 3600" in result.reason


def test_the_physical_maximum_is_a_setting():
    tight = TelemetryLimits(max_demand_kw=Decimal("1"))
    assert validate_meter_read(a_read(value=Decimal("1001")), NOW, tight).reason_code == "VALUE_TOO_LARGE"


# -- revisions ------------------------------------------------------------------------------------


def interval(revision=0, kwh="1.432") -> MeterInterval:
    return validate_meter_read(a_read(revision=revision, value=Decimal(kwh) * 1000), NOW, LIMITS)


def test_first_sight_is_new_and_remembered_with_its_position():
    verdict, seen = reconcile(None, interval(), partition=1, offset=10)
    assert verdict is Verdict.NEW
    assert seen == SeenInterval(0, interval().content_digest, 1, 10, None)


def test_an_exact_repeat_from_elsewhere_is_a_duplicate():
    _, seen = reconcile(None, interval(), 1, 10)
    assert reconcile(seen, interval(), 1, 11) == (Verdict.DUPLICATE, seen)


def test_the_same_record_read_again_after_a_crash_is_replayed_with_the_same_identity():
    _, seen = reconcile(None, interval(), 1, 10)
    assert reconcile(seen, interval(), 1, 10) == (Verdict.REPLAY, seen)


def test_a_higher_revision_supersedes_and_names_the_lower():
    _, seen = reconcile(None, interval(0), 1, 10)
    verdict, newer = reconcile(seen, interval(2, "1.5"), 1, 20)
    assert verdict is Verdict.REVISION
    assert (newer.revision, newer.supersedes) == (2, 0)


def test_a_lower_revision_arriving_late_is_stale():
    _, seen = reconcile(None, interval(2), 1, 10)
    assert reconcile(seen, interval(1, "9"), 1, 11)[0] is Verdict.STALE


def test_the_same_revision_with_other_content_is_a_conflict():
    _, seen = reconcile(None, interval(0, "1.432"), 1, 10)
    assert reconcile(seen, interval(0, "2.000"), 1, 11)[0] is Verdict.CONFLICT


def test_state_survives_its_json_form():
    _, seen = reconcile(None, interval(), 3, 99)
    assert SeenInterval.from_state(seen.to_state()) == seen


def test_a_downstream_reader_keeps_each_revision_once():
    revisions = IntervalRevisions()
    first = interval(0).as_record(None)
    assert revisions.accept(first)
    assert not revisions.accept(first)  # a re-emission after a crash
    assert revisions.accept(interval(1, "2").as_record(0))
    assert not revisions.accept(first)  # an old revision never comes back


# -- thermostats ----------------------------------------------------------------------------------


def a_state(**changes) -> dict:
    state = {
        "thermostat_serial": "EH-1", "service_account_id": "SA-1", "observed_at": datetime(2025, 7, 15, 23, 5, tzinfo=timezone.utc),
        "online": True, "hvac_mode": "COOL", "cool_setpoint_f": 78.0, "indoor_temp_f": 76.5, "event_id": None,
        "override": False,
    }
    return {**state, **changes}


@pytest.mark.parametrize(
    "changes, reason_code",
    [
        ({"thermostat_serial": ""}, "MISSING_ID"),
        ({"cool_setpoint_f": 120.0}, "IMPLAUSIBLE_SETPOINT"),
        ({"indoor_temp_f": -40.0}, "IMPLAUSIBLE_TEMPERATURE"),
        ({"observed_at": NOW + timedelta(hours=1)}, "FUTURE_TIMESTAMP"),
        ({"observed_at": datetime(1990, 1, 1, tzinfo=timezone.utc)}, "TIMESTAMP_TOO_OLD"),
    ],
)
def test_implausible_thermostat_states_are_rejected(changes, reason_code):
    assert validate_thermostat_state(a_state(**changes), NOW, LIMITS).reason_code == reason_code


def test_a_plausible_state_passes():
    assert validate_thermostat_state(a_state(cool_setpoint_f=None, indoor_temp_f=None), NOW, LIMITS) is None


def test_device_changes_follow_connectivity_and_overrides():
    changes, first = device_changes(None, a_state())
    assert changes == ["FIRST_SEEN"]
    later = lambda minutes, **c: a_state(observed_at=datetime(2025, 7, 15, 23, 5 + minutes, tzinfo=timezone.utc), **c)
    assert device_changes(first, later(1))[0] == []
    assert device_changes(first, later(1, online=False))[0] == ["WENT_OFFLINE"]
    changes, overriding = device_changes(first, later(2, override=True, event_id="EV-1"))
    assert changes == ["OVERRIDE"]
    # Still overriding the same event: not a new override.
    assert device_changes(overriding, later(3, override=True, event_id="EV-1"))[0] == []
    # An older state arriving late changes nothing.
    assert device_changes(overriding, later(0, online=False)) == ([], None)
    assert DeviceSnapshot.from_state(overriding.to_state()) == overriding
