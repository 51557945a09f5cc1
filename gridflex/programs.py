"""The program catalogue: one YAML file per program version under ``programs/`` (PROGRAMS.md).

Every service reads the same catalogue. A file is validated completely when loaded; a malformed
one stops the service with the file, the place in it and what is wrong. Money is written as a
quoted decimal string (a YAML float is binary and is refused); every rule's parameter has a name
here, so adding a program version is a new file, never new code.
"""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from gridflex.topics import PROVIDER_ID


class ProgramCatalogueError(ValueError):
    """A program file that cannot be used: the message names the file, the field and the problem."""


def _money(value: object) -> object:
    if isinstance(value, float):
        raise ValueError(f"write money as a quoted decimal string (e.g. '{value}'): a YAML float is binary")
    if isinstance(value, (str, int)):
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            raise ValueError(f"{value!r} is not a decimal amount") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"{value!r} must be a finite amount of zero or more")
        return amount
    return value


def _month_day(value: object) -> object:
    if isinstance(value, str):
        try:
            month, day = (int(part) for part in value.split("-"))
            date(2024, month, day)  # a leap year: 02-29 is a valid month-day
        except ValueError:
            raise ValueError(f"{value!r} is not a month-day like '06-01'") from None
        return (month, day)
    raise ValueError(f"{value!r} is not a month-day like '06-01'")


def _provider_id(value: object) -> object:
    if not isinstance(value, str) or not PROVIDER_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a provider id (lower-case letters, digits and '-')")
    return value


Money = Annotated[Decimal, BeforeValidator(_money)]
MonthDay = Annotated[tuple[int, int], BeforeValidator(_month_day)]
ProviderId = Annotated[str, BeforeValidator(_provider_id)]


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerClass(str, Enum):
    RESIDENTIAL = "RESIDENTIAL"
    BUSINESS = "BUSINESS"


class Eligibility(_Rules):
    customer_classes: frozenset[CustomerClass]
    meter_types: frozenset[str] | None = Field(None, description="None: any meter")
    rate_schedules: frozenset[str] | None = Field(None, description="None: any rate schedule")
    requires_central_ac: bool
    excluded_programs: dict[str, str] = Field(default_factory=dict, description="code → name, for the sentence")
    dual_participation: dict[CustomerClass, frozenset[str]] = Field(
        default_factory=dict, description="excluded codes a customer class may still hold (ELRP sub-groups)"
    )
    thermostat_sources: frozenset[str] = frozenset({"RETAIL", "UTILITY_PROGRAM"})
    requires_data_sharing_authorization: bool = False


class DayKind(str, Enum):
    ANY_DAY = "ANY_DAY"
    BUSINESS_DAY = "BUSINESS_DAY"


class Window(_Rules):
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> "Window":
        if self.end <= self.start:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")
        return self


class Precool(_Rules):
    max_minutes: int = Field(gt=0)
    offset_f: int = Field(gt=0)
    tou_on_peak: Window | None = Field(None, description="never precool a TOU account in this window")
    tou_on_peak_business_days_only: bool = True
    tou_rate_prefix: str = Field("TOU-", min_length=1, description="rate schedules that start with this are TOU rates")


class EventLimits(_Rules):
    days: DayKind
    window: Window | None = Field(None, description="events lie inside these local hours")
    min_duration_minutes: int = Field(gt=0)
    max_duration_minutes: int = Field(gt=0)
    max_minutes_per_day: int = Field(gt=0)
    max_hours_per_year: int | None = Field(None, gt=0)
    min_notice_minutes: int = Field(ge=0)
    announced_day_before: bool = False
    max_setpoint_offset_f: int = Field(gt=0)
    precool: Precool | None = None

    @model_validator(mode="after")
    def _durations(self) -> "EventLimits":
        if self.min_duration_minutes > self.max_duration_minutes:
            raise ValueError("min_duration_minutes is above max_duration_minutes")
        if self.max_duration_minutes > self.max_minutes_per_day:
            raise ValueError("max_duration_minutes is above max_minutes_per_day")
        return self


class AdjustmentKind(str, Enum):
    RATIO = "RATIO"  # the baseline is scaled by day-of usage / baseline usage over the adjustment hours
    ADDITIVE = "ADDITIVE"  # the baseline gains (day-of − baseline usage) per adjustment hour, per event hour


class DayOfAdjustment(_Rules):
    """Moves the baseline toward how the account used power on the event day, before the event."""

    kind: AdjustmentKind
    hours_before: int = Field(gt=0, le=12, description="the adjustment window: these clock hours before the start")
    gap_hours: int = Field(0, ge=0, le=12, description="hours left out between the window and the start (precool)")
    max_change: Money = Field(description="the adjustment moves the baseline by at most this fraction, either way")

    @model_validator(mode="after")
    def _bounded(self) -> "DayOfAdjustment":
        if self.max_change > 1:
            raise ValueError("max_change is a fraction of the baseline, at most 1")
        return self


class Baseline(_Rules):
    """How an account's expected usage during an event is estimated (services/baseline)."""

    method: str = Field(pattern=r"^[a-z0-9][a-z0-9-]+$",
                        description="a registered method: csrl-3-of-5, average-10-of-10")
    candidate_days: int = Field(gt=0, description="the most recent eligible weekdays before the event day")
    highest_days: int = Field(gt=0, description="the baseline averages the N highest candidate days")
    search_days: int = Field(45, gt=0, description="how many calendar days before the event candidate days "
                                                   "are looked for; fewer found means insufficient data")
    day_of_adjustment: DayOfAdjustment | None = None
    data_deadline_days: int = Field(7, gt=0, description="after the event ends, missing data waits this long "
                                                         "before the result is INSUFFICIENT_DATA")
    settlement_window_days: int = Field(60, gt=0, description="after the event ends, revised meter data "
                                                              "revises the result this long")

    @model_validator(mode="after")
    def _days(self) -> "Baseline":
        if self.highest_days > self.candidate_days:
            raise ValueError(f"highest_days {self.highest_days} exceeds candidate_days {self.candidate_days}")
        if self.data_deadline_days > self.settlement_window_days:
            raise ValueError("data_deadline_days must fall inside the settlement window")
        return self


class Season(_Rules):
    start: MonthDay
    end: MonthDay

    def contains(self, day: date) -> bool:
        return self.start <= (day.month, day.day) <= self.end


class CapacityCredit(_Rules):
    per_season_day: Money
    cap_per_bill_period: Money | None = None
    cap_per_year: Money | None = None


class EnergyCredit(_Rules):
    credit_type: str = Field("ENERGY", pattern="^(ENERGY|REWARD)$")
    per_kwh: Money
    cap_per_year: Money | None = None


class Credits(_Rules):
    season: Season | None = None
    capacity: CapacityCredit | None = None
    energy: EnergyCredit | None = None

    @model_validator(mode="after")
    def _season(self) -> "Credits":
        if self.capacity is not None and self.season is None:
            raise ValueError("a capacity credit is paid per season day: give the season")
        return self


class SignupBonus(_Rules):
    amount: Money
    fund: Money = Field(description="first come first served until this is used up")
    reversal_days: int = Field(gt=0, description="a bonus paid in error is reversed within this many days of posting")
    excluded_thermostat_sources: frozenset[str] = frozenset({"UTILITY_PROGRAM"})


class Rebate(_Rules):
    amount: Money
    requires_joint_gas_customer: bool
    excluded_thermostat_sources: frozenset[str] = frozenset()


class OfflineRemoval(_Rules):
    min_consecutive_days: int = Field(gt=0)
    season_start: MonthDay
    season_end: MonthDay
    lockout_months: int = Field(0, ge=0)


class OverrideRemoval(_Rules):
    within_first_minutes: int = Field(gt=0)
    lockout_months: int = Field(ge=0)


class MinimumUsageRemoval(_Rules):
    min_kwh: Money
    window_minutes: int = Field(gt=0, description="the hour before or after an event")
    lockout_months: int = Field(ge=0)


class Removal(_Rules):
    annual_review_by: MonthDay = Field(description="the previous calendar year is reviewed on this day")
    offline: OfflineRemoval | None = None
    overrides: OverrideRemoval | None = None
    minimum_usage: MinimumUsageRemoval | None = None


class Program(_Rules):
    """One program version: who may join, when events may run, how results are paid."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]+$")
    name: str
    source: str = Field(description="where the rules come from (seed, tariff)")
    effective_from: date
    effective_to: date | None = None
    providers: frozenset[ProviderId]
    enrollment_effective_business_days: int = Field(gt=0)
    eligibility: Eligibility
    events: EventLimits
    baseline: Baseline
    credits: Credits
    signup_bonus: SignupBonus | None = None
    rebate: Rebate | None = None
    removal: Removal | None = None
    decisions: list[str] = Field(default_factory=list, description="decisions the seed leaves open, in words")

    @model_validator(mode="after")
    def _dates(self) -> "Program":
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError(f"effective_to {self.effective_to} is before effective_from {self.effective_from}")
        return self

    def open_on(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


class ProgramCatalogue:
    """Every program version, by id."""

    def __init__(self, programs: dict[str, Program]):
        self.programs = programs

    def __contains__(self, program_id: str) -> bool:
        return program_id in self.programs

    def __getitem__(self, program_id: str) -> Program:
        return self.programs[program_id]

    def __iter__(self):
        return iter(self.programs.values())

    @classmethod
    def load(cls, directory: Path) -> "ProgramCatalogue":
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise ProgramCatalogueError(f"{directory}: no program files (*.yaml)")
        programs: dict[str, Program] = {}
        for path in files:
            program = load_program(path)
            if program.id in programs:
                raise ProgramCatalogueError(f"{path}: program id {program.id!r} is already defined by another file")
            programs[program.id] = program
        return cls(programs)


def load_program(path: Path) -> Program:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProgramCatalogueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ProgramCatalogueError(f"{path}: a program file is a mapping of fields")
    try:
        program = Program.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(file)'}: {error['msg']}" for error in exc.errors()
        )
        raise ProgramCatalogueError(f"{path}: {problems}") from None
    if path.stem != program.id:
        raise ProgramCatalogueError(f"{path}: the file of program {program.id!r} must be named {program.id}.yaml")
    return program
