"""The program catalogue: every program of PROGRAMS.md as a data file, validated on load."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from gridflex import REPO_ROOT
from gridflex.programs import ProgramCatalogue, ProgramCatalogueError, load_program

CATALOGUE = ProgramCatalogue.load(REPO_ROOT / "programs")


def test_every_program_of_the_rules_is_a_file():
    assert sorted(p.id for p in CATALOGUE) == ["ohm-hours", "sce-save-power-days", "sce-sep-2025", "sce-sep-legacy"]


def test_current_sep_terms_carry_the_seed_numbers():
    sep = CATALOGUE["sce-sep-2025"]
    assert sep.providers == {"energyhub", "resideo"}
    assert sep.eligibility.rate_schedules == {
        "D", "D-CARE", "D-FERA", "TOU-D", "TOU-D-T", "TOU-GS-1", "TOU-GS-2", "TOU-GS-1-RTP", "TOU-GS-2-RTP"}
    assert sep.credits.capacity.per_season_day == Decimal("0.40984")
    assert (sep.credits.capacity.cap_per_bill_period, sep.credits.capacity.cap_per_year) == (Decimal("12.50"),
                                                                                            Decimal("50.00"))
    assert (sep.events.max_minutes_per_day, sep.events.max_hours_per_year, sep.events.min_notice_minutes) == (360, 180, 20)
    assert sep.signup_bonus.amount == Decimal("75.00") and sep.signup_bonus.reversal_days == 90
    assert sep.removal.offline.min_consecutive_days == 30 and sep.removal.overrides.lockout_months == 12
    assert sep.removal.minimum_usage.min_kwh == Decimal("1.5")
    assert sep.credits.season.contains(date(2025, 6, 1)) and sep.credits.season.contains(date(2025, 9, 30))
    assert not sep.credits.season.contains(date(2025, 10, 1))


def test_legacy_terms_pay_energy_and_a_rebate():
    legacy = CATALOGUE["sce-sep-legacy"]
    assert legacy.credits.energy.per_kwh == Decimal("0.07")
    assert legacy.credits.capacity.per_season_day == Decimal("0.3275")
    assert legacy.rebate.amount == Decimal("150.00") and legacy.rebate.requires_joint_gas_customer
    assert legacy.events.window.start.hour == 11 and legacy.events.window.end.hour == 20
    assert (legacy.baseline.method, legacy.baseline.candidate_days, legacy.baseline.highest_days) == ("csrl-3-of-5", 5, 3)


def test_save_power_days_and_ohm_hours():
    spd = CATALOGUE["sce-save-power-days"]
    assert spd.credits.energy.per_kwh == Decimal("1.25") and spd.credits.energy.cap_per_year == Decimal("60.00")
    ohm = CATALOGUE["ohm-hours"]
    assert ohm.eligibility.requires_data_sharing_authorization
    assert ohm.baseline.method == "average-10-of-10" and ohm.baseline.candidate_days == 10
    adjustment = ohm.baseline.day_of_adjustment
    assert (adjustment.kind.value, adjustment.hours_before, adjustment.max_change) == ("RATIO", 2, Decimal("0.20"))
    assert (ohm.baseline.data_deadline_days, ohm.baseline.settlement_window_days) == (7, 60)


def _write(tmp_path: Path, text: str, name: str = "sce-sep-2025.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _sep_text() -> str:
    return (REPO_ROOT / "programs" / "sce-sep-2025.yaml").read_text()


def test_a_float_amount_is_refused_with_the_place_it_is_in(tmp_path):
    path = _write(tmp_path, _sep_text().replace('per_season_day: "0.40984"', "per_season_day: 0.40984"))
    with pytest.raises(ProgramCatalogueError, match=r"sce-sep-2025.yaml: credits.capacity.per_season_day: .*quoted"):
        load_program(path)


def test_an_unknown_field_is_refused(tmp_path):
    path = _write(tmp_path, _sep_text().replace("reversal_days: 90", "reversal_days: 90\n  reversal_dayz: 90"))
    with pytest.raises(ProgramCatalogueError, match=r"signup_bonus.reversal_dayz: Extra inputs are not permitted"):
        load_program(path)


def test_a_bad_month_day_and_a_bad_provider_are_both_named(tmp_path):
    text = _sep_text().replace('start: "06-01"', 'start: "06-31"').replace("[energyhub, resideo]", "[Energy Hub]")
    with pytest.raises(ProgramCatalogueError) as raised:
        load_program(_write(tmp_path, text))
    assert "credits.season.start" in str(raised.value) and "'06-31' is not a month-day" in str(raised.value)
    assert "providers" in str(raised.value) and "'Energy Hub' is not a provider id" in str(raised.value)


def test_a_file_must_be_named_after_its_program(tmp_path):
    with pytest.raises(ProgramCatalogueError, match="must be named sce-sep-2025.yaml"):
        load_program(_write(tmp_path, _sep_text(), name="sep.yaml"))


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ProgramCatalogueError, match="no program files"):
        ProgramCatalogue.load(tmp_path)
