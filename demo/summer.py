"""The rest of the summer, for settlement: what the demo sends, day by day, and who responds to what.

After the demo day, the utility signs up more households in its other programs: Save Power Days
through EnergyHub and Google Nest, ohm-hours through OhmConnect (each OhmConnect account with
its data-sharing authorization first). Then the summer runs to its end, 2025-09-30: every
account's meter reads, day after day, shaped on the Green Button sample year; on the hottest
afternoons the utility calls events on all three programs open in 2025, announced the day
before. During an event most enrolled thermostats follow it and the household's load drops a
quarter to a half; some customers override part way through; some thermostats are offline and
shed nothing. The trouble a real summer carries goes in too: a household's event-day reads
delivered days late, estimated reads corrected after the event's performance was settled (the
performance is revised, and settlement posts the difference), a customer who leaves the Smart
Energy Program in August, and malformed records for four services to refuse.

The earlier terms (``sce-sep-legacy``) closed at the end of 2024: they have no 2025 summer to
run, and are exercised by the settlement unit tests instead.

Pure: this module builds records (dicts) and what should come of them; it sends nothing.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from gridflex.calendar import LOCAL_ZONE, add_business_days, bill_period, local_day_bounds
from gridflex.programs import ProgramCatalogue
from gridflex.topics import (
    CUSTOMER_ACCOUNTS,
    DATA_SHARING_AUTHORIZATIONS,
    ENERGY_EVENTS,
    ENROLLMENT_REQUESTS,
    METER_READS,
    THERMOSTAT_STATE,
)

from demo.enrollment import EnrollmentScenario, local_instant, plain_account
from demo.greenbutton import SampleYear, sample_hour
from demo.scenario import HOUR, DayScenario, Outgoing, ServiceAccount, SimulatedHour, meter_read, plain_reads

SEP, SPD, OHM = "sce-sep-2025", "sce-save-power-days", "ohm-hours"
SUMMER_END = date(2025, 9, 30)
PROVIDERS_BY_PROGRAM = {SPD: ("energyhub", "nest-labs"), OHM: ("ohmconnect",)}
NEW_ACCOUNTS = {SPD: 16, OHM: 12}
# Event hours by program (local), and how the days are picked from the sample year's afternoons.
EVENT_HOURS = {SEP: (16, 19), SPD: (15, 18), OHM: (18, 19)}
EVENT_WINDOW_DAYS = {SEP: 10, SPD: 12, OHM: 10}  # one event per window of this many days …
EVENT_RANK = {SEP: 0, SPD: 0, OHM: 1}  # … on its hottest (0) or second-hottest (1) day
FOLLOWED, OVERRIDE, OFFLINE = "followed", "overrode", "offline"
BEHAVIOUR_WEIGHTS = {FOLLOWED: 80, OVERRIDE: 12, OFFLINE: 8}
BIG_HOUSE_SCALE = Decimal("7.5")  # one Save Power Days household with a pool pump: it reaches the $60 cap
BIG_HOUSE_SHED = Decimal("0.7")
LATE_DAYS = 3  # a late household's event-day reads arrive this many days after the day
CORRECTED_AFTER_DAYS = 2  # an estimated read is corrected this many days later
LEAVING_ON = date(2025, 8, 19)  # a Smart Energy Program customer asks to leave


@dataclass(frozen=True)
class SummerEvent:
    event_id: str
    program_id: str
    day: date
    start: datetime  # UTC
    end: datetime

    def request(self, issued_at: datetime) -> dict:
        return {"event_id": self.event_id, "program_id": self.program_id, "action": "SCHEDULE",
                "reason": "GRID_STRESS", "start": self.start, "end": self.end, "issued_at": issued_at,
                "setpoint_offset_f": 4, "precool": False, "targets": []}


@dataclass(frozen=True)
class Thermostat:
    service_account_id: str
    program_id: str
    provider_id: str
    serial: str
    effective_from: date
    effective_to: date | None = None  # the first day no longer in effect

    def in_effect(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)


@dataclass(frozen=True)
class Participation:
    """One thermostat in one event: how its household responded."""

    event: SummerEvent
    thermostat: Thermostat
    behaviour: str
    shed: Decimal  # the share of the household's load shed while the thermostat follows the event
    override_at: datetime | None = None

    def load_factor(self, hour_start: datetime) -> Decimal:
        """What remains of the hour's load: 1 outside the event, less while following it."""
        if self.behaviour == OFFLINE or not self.event.start <= hour_start < self.event.end:
            return Decimal(1)
        following = HOUR
        if self.override_at is not None:
            following = min(max(self.override_at - hour_start, timedelta(0)), HOUR)
        return 1 - self.shed * Decimal(following.total_seconds()) / Decimal(3600)


@dataclass
class SummerDay:
    """One local day: the clock ticks past its end, then what it brings goes out."""

    day: date
    schedules: list[Outgoing] = field(default_factory=list)  # event requests for tomorrow, sent this day
    records: list[Outgoing] = field(default_factory=list)  # after the day: reads, states, late and bad records
    events: list[SummerEvent] = field(default_factory=list)  # on this day

    @property
    def tick(self) -> datetime:
        return local_day_bounds(self.day)[1] + timedelta(minutes=5)

    @property
    def notes(self) -> list[Outgoing]:
        return [record for record in [*self.schedules, *self.records] if record.kind]


@dataclass
class SummerPlan:
    signup_at: datetime
    accounts: list[ServiceAccount]  # every metered account: the demo day's and the new ones
    new_accounts: dict[str, dict]  # the new accounts' facts (CustomerAccount), by id
    opening: list[Outgoing]  # the new accounts' facts and OhmConnect's authorizations, an hour before …
    signups: list[Outgoing]  # … the enrollment requests
    history: list[Outgoing]  # the new accounts' reads before the summer phase (backfilled at sign-up)
    days: list[SummerDay]
    events: list[SummerEvent]
    thermostats: list[Thermostat]  # every enrollment the demo expects, for every program
    participations: list[Participation]
    final_kwh: dict[tuple[str, datetime], Decimal]  # (meter, interval start) → kWh, the last revision
    late: list[tuple[SummerEvent, str]] = field(default_factory=list)  # (event, account) delivered late
    revised: list[tuple[SummerEvent, str]] = field(default_factory=list)  # (event, account) estimated, corrected
    malformed: list[Outgoing] = field(default_factory=list)  # with the dead-letter reason expected
    rejected_events: list[Outgoing] = field(default_factory=list)  # requests dispatch must reject
    leaver: Thermostat | None = None  # leaves the Smart Energy Program in August
    close_until: date = SUMMER_END  # the clock runs until every summer bill period has closed

    @property
    def account_by_id(self) -> dict[str, ServiceAccount]:
        return {account.service_account_id: account for account in self.accounts}

    def participants(self, event: SummerEvent) -> list[Participation]:
        return [p for p in self.participations if p.event is event]

    def results_completed(self, day: date) -> tuple[int, int]:
        """How many first results and revisions the baseline service owes once ``day``'s records
        are in: one per account in each event of the day (but those whose reads come late), one
        per late account whose reads came, one revision per corrected account."""
        late = {(event.event_id, account) for event, account in self.late}
        firsts = sum(1 for event in self.events if event.day == day
                     for account in {p.thermostat.service_account_id for p in self.participants(event)}
                     if (event.event_id, account) not in late)
        firsts += sum(1 for event, _ in self.late if event.day + timedelta(days=LATE_DAYS) == day)
        revisions = sum(1 for event, _ in self.revised if event.day + timedelta(days=CORRECTED_AFTER_DAYS) == day)
        return firsts, revisions


def plan_summer(sample: SampleYear, scenario: DayScenario, enrollment: EnrollmentScenario,
                programs: ProgramCatalogue, history_from: date, seed: int) -> SummerPlan:
    rng = random.Random(f"summer-{seed}")
    first_day = scenario.day + timedelta(days=1)
    signup_at = local_instant(first_day, 10)
    new_accounts, facts = _new_accounts(scenario, signup_at, rng)
    accounts = [*scenario.accounts, *new_accounts]
    opening, signups, thermostats = _signups(new_accounts, facts, signup_at, programs, rng)
    thermostats = [*_sep_thermostats(enrollment), *thermostats]
    leaver = _leaver(thermostats, rng)
    if leaver is not None:
        left = replace(leaver, effective_to=add_business_days(LEAVING_ON, programs[SEP].enrollment_effective_business_days))
        thermostats = [left if t is leaver else t for t in thermostats]
        leaver = left
    events = _pick_events(sample, first_day, thermostats)
    participations = _participations(events, thermostats, new_accounts[0].service_account_id, rng)
    close_until = max(bill_period(SUMMER_END, account["bill_cycle_day"])[1]
                      for account in [*enrollment.accounts.values(), *facts.values()]) + timedelta(days=1)
    plan = SummerPlan(signup_at, accounts, facts, opening, signups, [], [], events, thermostats, participations, {},
                      leaver=leaver, close_until=close_until)
    plan.history = _reads(sample, new_accounts, history_from, first_day, plan, random.Random(f"history-{seed}"))
    _build_days(plan, sample, first_day, rng)
    return plan


# -- the new households ---------------------------------------------------------------------------


def _new_accounts(scenario: DayScenario, published_at: datetime, rng: random.Random
                  ) -> tuple[list[ServiceAccount], dict[str, dict]]:
    profiles = sorted({account.profile for account in scenario.accounts})
    accounts, facts = [], {}
    for index in range(sum(NEW_ACCOUNTS.values())):
        account_id = f"SA-{305200 + index}"
        scale = BIG_HOUSE_SCALE if index == 0 else Decimal(str(round(rng.uniform(0.8, 1.4), 3)))
        accounts.append(ServiceAccount(account_id, f"M-{77000 + 11 * index}", profiles[index % len(profiles)],
                                       scale, 3600, "WH"))
        facts[account_id] = dict(plain_account(account_id, published_at, rng), net_metering_since=None)
    return accounts, facts


def _signups(accounts: list[ServiceAccount], facts: dict[str, dict], at: datetime, programs: ProgramCatalogue,
             rng: random.Random) -> tuple[list[Outgoing], list[Outgoing], list[Thermostat]]:
    opening: list[Outgoing] = [Outgoing(CUSTOMER_ACCOUNTS, account_id, value) for account_id, value in facts.items()]
    signups: list[Outgoing] = []
    thermostats = []
    ids = iter(accounts)
    for program_id, count in NEW_ACCOUNTS.items():
        providers = PROVIDERS_BY_PROGRAM[program_id]
        for n in range(count):
            account = next(ids).service_account_id
            provider = providers[n % len(providers)]
            requested_at = at - timedelta(minutes=45 - n)  # signed up in the hour before the clock reaches ``at``
            if program_id == OHM:
                opening.append(Outgoing(
                    DATA_SHARING_AUTHORIZATIONS.format(provider_id=provider), account, {
                        "authorization_id": f"ohm-auth-{account}", "service_account_id": account, "status": "ACTIVE",
                        "requested_at": requested_at - timedelta(days=2), "updated_at": requested_at - timedelta(hours=1),
                        "scopes": ["METER", "INTERVAL_USAGE"], "customer_information": {"interval_minutes": "60"},
                    }))
            serial = f"{provider[:2].upper()}-{rng.randrange(16 ** 6):06X}"
            signups.append(Outgoing(ENROLLMENT_REQUESTS.format(provider_id=provider), account, {
                "request_id": f"{provider}-summer-{n:03d}", "program_id": program_id, "action": "ENROLL",
                "service_account_id": account, "thermostat_serial": serial, "thermostat_model": "Smart Thermostat",
                "controls_central_ac": True, "thermostat_source": "RETAIL", "requested_at": requested_at,
            }))
            effective = add_business_days(requested_at.astimezone(LOCAL_ZONE).date(),
                                          programs[program_id].enrollment_effective_business_days)
            thermostats.append(Thermostat(account, program_id, provider, serial, effective))
    return opening, signups, thermostats


def _sep_thermostats(enrollment: EnrollmentScenario) -> list[Thermostat]:
    """The Smart Energy Program thermostats the demo day's enrollment weeks put in effect."""
    return [Thermostat(account_id, SEP, provider, serial, start, end)
            for account_id, periods in sorted(enrollment.expected_periods().items())
            for provider, serial, _, start, end in sorted(periods, key=str)]


def _leaver(thermostats: list[Thermostat], rng: random.Random) -> Thermostat | None:
    """A Smart Energy Program customer with one thermostat who leaves in August."""
    counts = defaultdict(int)
    for thermostat in thermostats:
        counts[thermostat.service_account_id] += 1
    alone = [t for t in thermostats if t.program_id == SEP and t.effective_to is None and counts[t.service_account_id] == 1
             and t.provider_id == "energyhub"]
    return rng.choice(alone) if alone else None


# -- the events -----------------------------------------------------------------------------------


def afternoon_heat(sample: SampleYear, day: date) -> Decimal:
    """Every profile's load from 14:00 to 20:00 on the day the replayed ``day`` carries: how hot it was."""
    total = Decimal(0)
    for hour in range(14, 20):
        instant = datetime.combine(day, time(hour), tzinfo=LOCAL_ZONE).astimezone(timezone.utc)
        total += sum(sample.wh_or_nearest(profile, sample_hour(instant)) for profile in sample.profiles)
    return total


def _pick_events(sample: SampleYear, first_day: date, thermostats: list[Thermostat]) -> list[SummerEvent]:
    """Each program's events: in each window of days, the hottest (or second-hottest) day on which
    its thermostats are in effect and that was announced the day before the summer phase began."""
    events = []
    for program_id, window in EVENT_WINDOW_DAYS.items():
        starts = [t.effective_from for t in thermostats if t.program_id == program_id]
        day = max(first_day + timedelta(days=2), min(starts) + timedelta(days=1))
        while day <= SUMMER_END:
            days = [day + timedelta(days=n) for n in range(window) if day + timedelta(days=n) <= SUMMER_END]
            ranked = sorted(days, key=lambda d: afternoon_heat(sample, d), reverse=True)
            chosen = ranked[min(EVENT_RANK[program_id], len(ranked) - 1)]
            start_hour, end_hour = EVENT_HOURS[program_id]
            start, end = (datetime.combine(chosen, time(h), tzinfo=LOCAL_ZONE).astimezone(timezone.utc)
                          for h in (start_hour, end_hour))
            prefix = {SEP: "SEP", SPD: "SPD", OHM: "OHM"}[program_id]
            events.append(SummerEvent(f"{prefix}-{chosen:%Y-%m%d}-{start_hour:02d}", program_id, chosen, start, end))
            day += timedelta(days=window)
    return sorted(events, key=lambda e: (e.start, e.program_id))


def _participations(events: list[SummerEvent], thermostats: list[Thermostat], big_house: str, rng: random.Random
                    ) -> list[Participation]:
    out = []
    for event in events:
        for thermostat in thermostats:
            if thermostat.program_id != event.program_id or not thermostat.in_effect(event.day):
                continue
            behaviour = rng.choices(list(BEHAVIOUR_WEIGHTS), weights=list(BEHAVIOUR_WEIGHTS.values()))[0]
            shed = Decimal(str(round(rng.uniform(0.25, 0.5), 2)))
            if thermostat.service_account_id == big_house:  # pool pump and A/C off: always, and deep
                behaviour, shed = FOLLOWED, BIG_HOUSE_SHED
            override_at = None
            if behaviour == OVERRIDE:
                minutes = rng.randrange(15, max(int((event.end - event.start).total_seconds() // 60) - 10, 20))
                override_at = event.start + timedelta(minutes=minutes)
            out.append(Participation(event, thermostat, behaviour, shed, override_at))
    return out


# -- the days -------------------------------------------------------------------------------------


def _load_factors(plan: SummerPlan) -> dict[tuple[str, datetime], Decimal]:
    """(account, hour start) → what remains of its load; only the hours an event changes."""
    factors: dict[tuple[str, datetime], Decimal] = {}
    for p in plan.participations:
        hour = p.event.start
        while hour < p.event.end:
            key = (p.thermostat.service_account_id, hour)
            factors[key] = min(factors.get(key, Decimal(1)), p.load_factor(hour))
            hour += HOUR
    return factors


def _reads(sample: SampleYear, accounts: list[ServiceAccount], first: date, end: date, plan: SummerPlan,
           rng: random.Random, factors: dict | None = None) -> list[Outgoing]:
    """Every account's plain reads for the local days from ``first`` to the day before ``end``."""
    reads: list[Outgoing] = []
    start, stop = local_day_bounds(first)[0], local_day_bounds(end)[0]
    factors = factors or {}
    while start < stop:
        hour = SimulatedHour(start, start + HOUR)
        for account in accounts:
            factor = factors.get((account.service_account_id, start), Decimal(1))
            reads += plain_reads(sample, account, hour, rng, plan.final_kwh, factor)
        start += HOUR
    return reads


def _build_days(plan: SummerPlan, sample: SampleYear, first_day: date, rng: random.Random) -> None:
    factors = _load_factors(plan)
    days = {}
    day = first_day
    while day <= plan.close_until:
        days[day] = SummerDay(day)
        day += timedelta(days=1)
    for day, summer_day in days.items():
        if day <= SUMMER_END:
            summer_day.records += _reads(sample, plan.accounts, day, day + timedelta(days=1), plan, rng, factors)
    for event in plan.events:
        days[event.day].events.append(event)
        announce = days.get(event.day - timedelta(days=1))
        (announce or days[first_day]).schedules.append(Outgoing(ENERGY_EVENTS, event.event_id, event.request(
            (announce or days[first_day]).tick - timedelta(days=1) + timedelta(minutes=1))))
    _thermostat_states(plan, days)
    _late_and_revised(plan, days, sample)
    _malformed(plan, days)
    _leaving(plan, days)
    plan.days = list(days.values())


def _thermostat_states(plan: SummerPlan, days: dict[date, SummerDay]) -> None:
    for p in plan.participations:
        event, records = p.event, days[p.event.day].records
        if p.behaviour == OFFLINE:
            records += [_state(p, event.start - timedelta(minutes=25), online=False, during=False),
                        _state(p, event.end + timedelta(minutes=40), online=True, during=False)]
        else:
            records.append(_state(p, event.start + timedelta(minutes=1), online=True))
            if p.override_at is not None:
                records.append(_state(p, p.override_at, online=True, override=True))


def _state(p: Participation, at: datetime, *, online: bool, override: bool = False, during: bool = True) -> Outgoing:
    """What the thermostat reports: following the event (setpoint up), overridden (down), or not in it."""
    t = p.thermostat
    return Outgoing(THERMOSTAT_STATE.format(provider_id=t.provider_id), t.serial, {
        "thermostat_serial": t.serial, "service_account_id": t.service_account_id, "observed_at": at,
        "online": online, "hvac_mode": "COOL", "cool_setpoint_f": 74.0 if override else 80.0 if during else 76.0,
        "indoor_temp_f": 77.5 if online else None, "event_id": p.event.event_id if during and online else None,
        "override": override,
    })


def _late_and_revised(plan: SummerPlan, days: dict[date, SummerDay], sample: SampleYear) -> None:
    """For one Save Power Days and one ohm-hours event each: a follower's event-day reads delivered
    late, and another's event hours estimated (as if it had not responded), corrected later."""
    for program_id in (SPD, OHM):
        events = [event for event in plan.events if event.program_id == program_id]
        late_event, revised_event = events[1], events[min(3, len(events) - 1)]
        late = _follower(plan, late_event, exclude=set())
        revised = _follower(plan, revised_event, exclude={late})
        event_day = days[late_event.day]
        held = [r for r in event_day.records if r.topic == METER_READS and r.key == late]
        for record in held:
            event_day.records.remove(record)
            record.value = dict(record.value, read_at=days[late_event.day + timedelta(days=LATE_DAYS)].tick)
        held[0].kind, held[0].note = "late reads", (
            f"{late}: its {len(held)} reads of {late_event.day:%m-%d} (event {late_event.event_id}) arrive "
            f"{LATE_DAYS} days late; the baseline waits for them")
        days[late_event.day + timedelta(days=LATE_DAYS)].records += held
        plan.late.append((late_event, late))

        account = plan.account_by_id[revised]
        event_day = days[revised_event.day]
        corrected_on = days[revised_event.day + timedelta(days=CORRECTED_AFTER_DAYS)]
        hour = revised_event.start
        while hour < revised_event.end:
            read = next(r for r in event_day.records if r.topic == METER_READS and r.key == revised
                        and r.value["interval_start"] == hour)
            estimate_wh = (sample.wh_or_nearest(account.profile, sample_hour(hour)) * account.scale).quantize(
                Decimal("0.01"))
            actual = dict(read.value, revision=1, read_at=corrected_on.tick)
            read.value = meter_read(account, hour, 3600, estimate_wh, read.value["read_at"], quality="ESTIMATED")
            corrected_on.records.append(Outgoing(METER_READS, revised, actual))
            hour += HOUR
        corrected_on.records[-1].kind = "corrected reads"
        corrected_on.records[-1].note = (
            f"{revised}: event {revised_event.event_id}'s hours were ESTIMATED as if it had not responded; "
            "revision 1 ACTUAL now: the performance is revised, settlement posts the difference")
        plan.revised.append((revised_event, revised))


def _follower(plan: SummerPlan, event: SummerEvent, exclude: set[str]) -> str:
    """An hourly-metered household that followed the event (the big house is left alone)."""
    big = plan.accounts[len(plan.accounts) - sum(NEW_ACCOUNTS.values())].service_account_id
    return next(p.thermostat.service_account_id for p in plan.participants(event)
                if p.behaviour == FOLLOWED and p.thermostat.service_account_id not in exclude | {big}
                and plan.account_by_id[p.thermostat.service_account_id].interval_seconds == 3600)


def _malformed(plan: SummerPlan, days: dict[date, SummerDay]) -> None:
    """Records four services must refuse, each to the dead-letter topic with its reason."""
    weeks = sorted(days)[7::7]
    some_account = plan.accounts[-1]
    garbage_account = b'{"service_account_id": "SA-305299", "rate": "TOU-D"}'  # JSON, not Avro
    plan.malformed += [
        Outgoing(CUSTOMER_ACCOUNTS, "SA-305299", garbage_account, dead_letter="UNDECODABLE", kind="undecodable",
                 note="the utility's account feed sends one record as JSON instead of Avro"),
        Outgoing(DATA_SHARING_AUTHORIZATIONS.format(provider_id="ohmconnect"), some_account.service_account_id, {
            "authorization_id": "ohm-auth-bad", "service_account_id": some_account.service_account_id,
            "status": "ACTIVE", "requested_at": local_instant(weeks[1], 9), "updated_at": local_instant(weeks[1], 9),
            "scopes": ["METER"], "customer_information": {"utility_password": "(what the customer typed)"},
        }, dead_letter="UTILITY_CREDENTIAL_REFUSED", kind="credential",
                 note="an authorization relaying the customer's utility password: refused whole, never stored"),
        Outgoing(METER_READS, some_account.service_account_id, dict(meter_read(
            some_account, local_instant(weeks[2], 13), 3600, Decimal("-812.40"), local_instant(weeks[2], 14)),
        ), dead_letter="NEGATIVE_VALUE", kind="negative value", note="a read of -812.40 Wh (sign error)"),
        Outgoing(ENROLLMENT_REQUESTS.format(provider_id="nest-labs"), some_account.service_account_id,
                 b"\x00\x00\x00\x00\x07garbage", dead_letter="UNDECODABLE", kind="undecodable",
                 note="a truncated enrollment request from Google Nest"),
    ]
    for week, record in zip(weeks, plan.malformed):
        days[week].records.append(record)
    wrong = Outgoing(ENERGY_EVENTS, "CPP-2025-0820", {
        "event_id": f"CPP-{weeks[3]:%Y-%m%d}", "program_id": "sce-critical-peak", "action": "SCHEDULE",
        "reason": "HIGH_PRICE", "start": local_instant(weeks[3] + timedelta(days=1), 14),
        "end": local_instant(weeks[3] + timedelta(days=1), 18), "issued_at": days[weeks[3]].tick - timedelta(days=1),
        "setpoint_offset_f": 4, "precool": False, "targets": [],
    }, kind="unknown program", note="an event for a program gridflex does not run: rejected, UNKNOWN_PROGRAM")
    wrong.key = wrong.value["event_id"]
    days[weeks[3]].schedules.append(wrong)
    plan.rejected_events.append(wrong)


def _leaving(plan: SummerPlan, days: dict[date, SummerDay]) -> None:
    """The August leaver's DISENROLL request: capacity credit stops at its effective date."""
    leaver = plan.leaver
    if leaver is None:
        return
    on, ends = LEAVING_ON, leaver.effective_to
    requested_at = local_instant(on, 11)
    record = Outgoing(ENROLLMENT_REQUESTS.format(provider_id=leaver.provider_id), leaver.service_account_id, {
        "request_id": f"{leaver.provider_id}-leave-0001", "program_id": SEP, "action": "DISENROLL",
        "service_account_id": leaver.service_account_id, "thermostat_serial": leaver.serial,
        "thermostat_model": "ecobee3 lite", "controls_central_ac": True, "thermostat_source": "RETAIL",
        "requested_at": requested_at,
    }, kind="disenrollment", note=f"{leaver.service_account_id} leaves the Smart Energy Program; in effect until {ends}")
    days[on].records.append(record)
