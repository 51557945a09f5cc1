"""The demo's scenarios say what the services must output; these checks keep what they say honest."""

from datetime import date, datetime, timezone

import pytest

from demo.enrollment import ACCEPTED, REJECTED, build_enrollment
from demo.greenbutton import SampleYear, sample_day, sample_hour
from demo.scenario import build_day, reporting_thermostats
from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE, add_business_days
from gridflex.programs import ProgramCatalogue
from services.enrollment.domain.eligibility import account_failures, program_failures, thermostat_failures

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")


@pytest.fixture(scope="module")
def sample():
    return SampleYear.load()


def test_the_replayed_day_keeps_its_weekday_and_local_hours():
    # The default demo day carries the load of the same weekday in the sample year.
    assert sample_day(date(2025, 7, 16)) == date(2011, 7, 20)
    assert date(2011, 7, 20).weekday() == date(2025, 7, 16).weekday() == 2  # Wednesdays
    # 17:00 in Los Angeles stands for 17:00 in Los Angeles, 730 weeks earlier.
    evening = datetime(2025, 7, 16, 17, tzinfo=LOCAL_ZONE)
    assert sample_hour(evening).astimezone(LOCAL_ZONE) == datetime(2011, 7, 20, 17, tzinfo=LOCAL_ZONE)
    # Daylight saving time starts and ends on replayed days in both years.
    assert sample_day(date(2025, 3, 9)) == date(2011, 3, 13)
    assert sample_day(date(2025, 11, 2)) == date(2011, 11, 6)
    # The repeated 01:00 of the day DST ends is the repeated 01:00 of the sample's.
    second_one_am = datetime(2025, 11, 2, 9, tzinfo=timezone.utc)  # 01:00 PST
    assert sample_hour(second_one_am) == datetime(2011, 11, 6, 9, tzinfo=timezone.utc)


@pytest.mark.parametrize(("day", "accounts"), [
    (date(2025, 1, 20), 20),  # the first day the demo takes: its earliest sign-ups fall on the day the program opens
    (date(2025, 7, 16), 60),  # the default
    (date(2025, 11, 2), 20),  # daylight saving time ends
    (date(2025, 12, 27), 20),  # the last day the replayed sample year covers
])
def test_every_expected_decision_follows_the_program_rules(sample, day, accounts):
    scenario = build_enrollment(build_day(sample, day, accounts, seed=2011), PROGRAMS, seed=2011)
    for case in scenario.cases:
        if case.action != "ENROLL" or case.kind == "unknown account":
            continue  # decided by what the utility never publishes, not by a rule
        # What the program file's rules say of this request, through the service's own functions…
        program = PROGRAMS.programs.get(case.request["program_id"])
        failures = program_failures(program, case.request["program_id"], case.provider_id, case.request_day)
        if program is not None:
            failures += account_failures(program, scenario.accounts[case.service_account_id], case.request_day)
            failures += thermostat_failures(program, case.request)
        # … is what the demo expects.
        assert (case.outcome, sorted(case.failures)) == (
            REJECTED if failures else ACCEPTED, sorted(failure.code for failure in failures)), case.kind
        if case.outcome == ACCEPTED:
            assert scenario.effective_date(case) == add_business_days(case.request_day, 3)


def test_the_thermostats_that_report_on_the_day_are_enrolled_on_their_accounts(sample):
    day = build_day(sample, date(2025, 7, 16), 60, seed=2011)
    scenario = build_enrollment(day, PROGRAMS, seed=2011)
    enrolled = {(case.provider_id, case.serial, case.service_account_id) for case in scenario.cases
                if case.action == "ENROLL" and case.outcome == ACCEPTED and case.cancelled_by is None}
    for provider, serial, index in reporting_thermostats():
        assert (provider, serial, day.accounts[index].service_account_id) in enrolled
    # A serial is one device: no two sign-ups name the same thermostat.
    serials = [case.serial for case in scenario.cases if case.action == "ENROLL"]
    assert len(serials) == len(set(serials))
