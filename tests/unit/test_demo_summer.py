"""The demo's summer: the plan it sends keeps the programs' rules, and the settlement oracle it
checks the ledger with applies PROGRAMS.md's numbers (worked out here by hand)."""

from collections import Counter
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from demo.baseline_phase import HISTORY_DAYS
from demo.enrollment import build_enrollment
from demo.greenbutton import SampleYear
from demo.scenario import build_day
from demo.settlement_report import expected_bonuses, expected_capacity, expected_energy
from demo.summer import BIG_HOUSE_SHED, FOLLOWED, LATE_DAYS, OHM, SEP, SPD, SUMMER_END, plan_summer
from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE
from gridflex.programs import ProgramCatalogue
from gridflex.topics import ENERGY_EVENTS, METER_READS

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")


@pytest.fixture(scope="module")
def plan():
    sample = SampleYear.load()
    day = build_day(sample, date(2025, 7, 16), 60, 2011)
    enrollment = build_enrollment(day, PROGRAMS, 2011)
    return plan_summer(sample, day, enrollment, PROGRAMS, day.day - timedelta(days=HISTORY_DAYS), 2011)


def test_every_program_open_in_2025_has_a_summer_of_events_within_its_rules(plan):
    by_program = Counter(event.program_id for event in plan.events)
    assert set(by_program) == {SEP, SPD, OHM} and min(by_program.values()) >= 5
    for event in plan.events:
        rules = PROGRAMS[event.program_id].events
        minutes = (event.end - event.start).total_seconds() / 60
        assert rules.min_duration_minutes <= minutes <= rules.max_duration_minutes
        assert event.day <= SUMMER_END
        if rules.window is not None:  # Save Power Days: 14:00-18:00
            assert event.start.astimezone(LOCAL_ZONE).time() >= rules.window.start
            assert event.end.astimezone(LOCAL_ZONE).time() <= rules.window.end
    # Each is announced the day before it (Save Power Days and ohm-hours require it).
    announced = {record.key: day.day for day in plan.days for record in day.schedules if record.topic == ENERGY_EVENTS}
    assert all(announced[event.event_id] == event.day - timedelta(days=1) for event in plan.events)


def test_only_thermostats_in_effect_take_part_and_the_leaver_stops(plan):
    for p in plan.participations:
        assert p.thermostat.program_id == p.event.program_id and p.thermostat.in_effect(p.event.day)
    leaver = plan.leaver
    assert leaver.effective_to == date(2025, 8, 22)  # asked on Tue 08-19: three business days later
    assert all(p.event.day < leaver.effective_to for p in plan.participations if p.thermostat == leaver)


def test_an_event_takes_its_share_off_the_hour_and_nothing_else(plan):
    big = plan.accounts[len(plan.accounts) - len(plan.new_accounts)]
    [p, *_] = [p for p in plan.participations if p.thermostat.service_account_id == big.service_account_id]
    assert p.behaviour == FOLLOWED and p.shed == BIG_HOUSE_SHED
    assert p.load_factor(p.event.start) == Decimal("0.3")
    assert p.load_factor(p.event.end) == 1 and p.load_factor(p.event.start - timedelta(hours=1)) == 1


def test_late_reads_arrive_days_later_and_each_completion_is_counted_once(plan):
    (event, account), _ = plan.late
    on_day = [r for day in plan.days if day.day == event.day for r in day.records
              if r.topic == METER_READS and r.key == account]
    later = [r for day in plan.days if day.day == event.day + timedelta(days=LATE_DAYS) for r in day.records
             if r.topic == METER_READS and r.key == account and r.value["interval_start"].astimezone(LOCAL_ZONE).date()
             == event.day]
    assert on_day == [] and len(later) == 24
    firsts = sum(plan.results_completed(day.day)[0] for day in plan.days)
    assert firsts == sum(len({p.thermostat.service_account_id for p in plan.participants(e)}) for e in plan.events)
    assert sum(plan.results_completed(day.day)[1] for day in plan.days) == len(plan.revised) == 2
    assert all(record.dead_letter for record in plan.malformed)


# -- the oracle -----------------------------------------------------------------------------------

START = {f"E{n}": datetime(2025, 7, 1 + n, 22, tzinfo=timezone.utc) for n in range(1, 6)}


def performance(event_id: str, kwh: str, revision: int = 0, program: str = SPD, status: str = "SETTLEABLE") -> dict:
    return {"event_id": event_id, "service_account_id": "SA-1", "program_id": program, "status": status,
            "reduction_kwh": Decimal(kwh), "revision": revision}


def test_the_oracle_caps_save_power_days_at_60_dollars_in_event_order():
    # 20 kWh × $1.25 = $25 per event: $25, $25, then $10 of the third, then nothing.
    records = [performance(f"E{n}", "20") for n in (3, 1, 2, 4)]
    assert expected_energy(records, PROGRAMS, START) == {
        ("E1", "SA-1"): 2500, ("E2", "SA-1"): 2500, ("E3", "SA-1"): 1000}
    # A revision replaces its event's credit; half a cent rounds up, once.
    records = [performance("E1", "1.000"), performance("E1", "1.004", revision=1)]
    assert expected_energy(records, PROGRAMS, START) == {("E1", "SA-1"): 126}  # 1.004 × 1.25 = 1.255
    # ohm-hours pays $0.50 with no cap; the current SEP terms pay no energy credit.
    records = [performance("E1", "3.333", program=OHM), performance("E2", "9", program=SEP)]
    assert expected_energy(records, PROGRAMS, START) == {("E1", "SA-1"): 167}


def test_the_oracle_pays_capacity_per_enrolled_summer_day_with_both_caps():
    state = {"service_account_id": "SA-1", "enrollments": [
        {"program_id": SEP, "effective_from": date(2025, 5, 20), "effective_to": None}]}
    # Cycle day 1: June and September are 30 days × $0.40984 = $12.2952 → $12.30; July and August
    # (31 days, $12.70504) are cut to $12.50 a period. May is outside the season.
    paid = expected_capacity([state], {"SA-1": 1}, PROGRAMS, date(2025, 10, 31))
    assert paid == {("SA-1", date(2025, 6, 1)): 1230, ("SA-1", date(2025, 7, 1)): 1250,
                    ("SA-1", date(2025, 8, 1)): 1250, ("SA-1", date(2025, 9, 1)): 1230}
    # A period not closed yet is not paid.
    assert ("SA-1", date(2025, 9, 1)) not in expected_capacity([state], {"SA-1": 1}, PROGRAMS, date(2025, 9, 29))
    # Leaving on 08-22: August counts 21 days (08-01 to 08-21), $8.61; September nothing.
    state["enrollments"][0]["effective_to"] = date(2025, 8, 22)
    paid = expected_capacity([state], {"SA-1": 1}, PROGRAMS, date(2025, 10, 31))
    assert paid[("SA-1", date(2025, 8, 1))] == 861 and ("SA-1", date(2025, 9, 1)) not in paid


def test_the_oracle_pays_a_bonus_per_claim_whose_latest_outcome_is_granted():
    def decision(claim: str, outcome: str, minute: int) -> dict:
        return {"claim_id": claim, "kind": "SIGNUP_BONUS", "outcome": outcome, "service_account_id": "SA-1",
                "amount": Decimal("75.00"), "decided_at": datetime(2025, 7, 1, 12, minute, tzinfo=timezone.utc)}
    assert expected_bonuses([decision("a", "GRANTED", 1), decision("b", "GRANTED", 2),
                             decision("b", "CANCELLED", 3), decision("c", "DENIED", 4)]) == {"SA-1": 7500}
