"""Removal rules of the current SEP terms: offline 30 days in season, overrides, minimum usage."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from gridflex import REPO_ROOT
from gridflex.programs import ProgramCatalogue
from gridflex.state import decode_value, encode_value
from services.enrollment.domain import removal
from services.enrollment.domain.removal import Event, Participation

SEP = ProgramCatalogue.load(REPO_ROOT / "programs")["sce-sep-2025"]


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def enrolled(since=date(2025, 1, 10), provider="energyhub") -> Participation:
    return Participation(enrollments=[{
        "program_id": "sce-sep-2025", "provider_id": provider, "thermostat_serial": "T-1", "request_id": "R-1",
        "effective_from": since, "effective_to": None, "end_reason": None,
    }])


def status(change: str, at: datetime, online: bool, event_id=None) -> dict:
    return {"thermostat_serial": "T-1", "change": change, "observed_at": at, "online": online, "event_id": event_id}


def events(count: int) -> list[Event]:
    # Afternoon events, 16:00-19:00 local (23:00-02:00 UTC), on July days.
    return [Event(f"EV-{n}", "sce-sep-2025", utc(2025, 7, 1 + n, 23), utc(2025, 7, 2 + n, 2), ()) for n in range(count)]


def test_thirty_consecutive_offline_days_in_season_remove_the_thermostat():
    participation = enrolled()
    removal.record_device_status(participation, status("WENT_OFFLINE", utc(2025, 7, 11, 18), online=False))
    assert removal.offline_findings(participation, SEP, date(2025, 8, 9)) == []
    [(_, finding)] = removal.offline_findings(participation, SEP, date(2025, 8, 10))
    assert (finding.rule, finding.thermostat_serial, finding.found_on) == ("OFFLINE", "T-1", date(2025, 8, 10))


def test_offline_days_count_from_april_first_and_not_past_october():
    since_march = enrolled()
    removal.record_device_status(since_march, status("WENT_OFFLINE", utc(2025, 3, 1, 18), online=False))
    [(_, finding)] = removal.offline_findings(since_march, SEP, date(2025, 6, 1))
    assert finding.found_on == date(2025, 5, 1)
    late = enrolled()
    removal.record_device_status(late, status("WENT_OFFLINE", utc(2025, 10, 15, 18), online=False))
    assert removal.offline_findings(late, SEP, date(2025, 12, 1)) == []  # only 17 days fit in the season


def test_coming_back_online_ends_the_streak():
    participation = enrolled()
    removal.record_device_status(participation, status("WENT_OFFLINE", utc(2025, 7, 1, 18), online=False))
    removal.record_device_status(participation, status("WENT_ONLINE", utc(2025, 7, 20, 18), online=True))
    assert removal.offline_findings(participation, SEP, date(2025, 9, 1)) == []


def test_overriding_every_event_within_its_first_hour_is_found_at_the_review():
    participation = enrolled()
    calendar = events(3)
    for event in calendar:
        removal.record_device_status(participation, status("OVERRIDE", event.start + timedelta(minutes=20), True,
                                                            event_id=event.event_id))
    found = removal.annual_findings(participation, SEP, 2025, calendar, date(2026, 1, 31))
    assert [f.rule for _, f in found] == ["OVERRIDES", "MINIMUM_USAGE"]
    assert found[0][1].evidence.startswith("overrode all 3 events dispatched in 2025")


def test_one_event_kept_or_one_override_after_the_first_hour_spares_the_account():
    participation = enrolled()
    calendar = events(3)
    removal.record_device_status(participation, status("OVERRIDE", calendar[0].start + timedelta(minutes=5), True,
                                                        event_id="EV-0"))
    removal.record_device_status(participation, status("OVERRIDE", calendar[1].start + timedelta(minutes=90), True,
                                                        event_id="EV-1"))
    rules = [f.rule for _, f in removal.annual_findings(participation, SEP, 2025, calendar, date(2026, 1, 31))]
    assert "OVERRIDES" not in rules


def window_usage(event: Event, before: str | None, after: str | None, revision: int = 0) -> dict:
    """The baseline service's EventWindowUsage record of the account for ``event``."""
    return {"event_id": event.event_id, "hour_before_kwh": Decimal(before) if before is not None else None,
            "hour_after_kwh": Decimal(after) if after is not None else None, "revision": revision}


def minimum_usage_found(participation: Participation, calendar: list[Event]) -> bool:
    found = removal.annual_findings(participation, SEP, 2025, calendar, date(2026, 1, 31))
    return "MINIMUM_USAGE" in [finding.rule for _, finding in found]


def test_one_and_a_half_kwh_in_the_hour_before_or_after_one_event_meets_minimum_usage():
    calendar = events(2)
    exactly = enrolled()
    assert removal.record_window_usage(exactly, window_usage(calendar[0], "0.2", "0.3"))
    assert removal.record_window_usage(exactly, window_usage(calendar[1], None, "1.500000000"))
    assert not minimum_usage_found(exactly, calendar)
    short = enrolled()
    removal.record_window_usage(short, window_usage(calendar[0], "1.499999999", None))
    removal.record_window_usage(short, window_usage(calendar[1], None, None))  # neither hour metered in full
    assert minimum_usage_found(short, calendar)


def test_the_usage_around_an_event_is_its_highest_revision_whatever_the_arrival_order():
    participation = enrolled()
    calendar = events(1)
    assert removal.record_window_usage(participation, window_usage(calendar[0], "0.4", None, revision=2))
    assert not removal.record_window_usage(participation, window_usage(calendar[0], "2.0", None, revision=1))  # late
    assert not removal.record_window_usage(participation, window_usage(calendar[0], "2.0", None, revision=2))
    assert minimum_usage_found(participation, calendar)
    assert removal.record_window_usage(participation, window_usage(calendar[0], "0.4", "1.6", revision=3))
    assert not minimum_usage_found(participation, calendar)


def test_usage_an_earlier_version_kept_from_raw_intervals_is_dropped_on_load():
    state = {**enrolled().to_state(), "usage": {"EV-0": {"M-1 2025-07-02T02:00:00+00:00": [1, "2.0"]},
                                                  "EV-1": [0, "1.6", None]}}
    assert Participation.from_state(decode_value(encode_value(state))).usage == {"EV-1": [0, "1.6", None]}


def test_a_year_without_events_for_the_account_is_not_reviewed():
    participation = enrolled(since=date(2025, 8, 1))  # enrolled after every event of the year
    assert removal.annual_findings(participation, SEP, 2025, events(3), date(2026, 1, 31)) == []


def test_events_for_other_providers_are_not_dispatched_to_the_account():
    participation = enrolled(provider="resideo")
    calendar = [event._replace(targets=("energyhub",)) for event in events(2)]
    assert removal.annual_findings(participation, SEP, 2025, calendar, date(2026, 1, 31)) == []


def test_participation_survives_its_storage_form():
    participation = enrolled()
    removal.record_device_status(participation, status("WENT_OFFLINE", utc(2025, 7, 11, 18), online=False))
    assert Participation.from_state(decode_value(encode_value(participation.to_state()))) == participation
