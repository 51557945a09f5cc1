"""One simulated day for the telemetry service: what the demo sends, hour by hour, and what should come out.

Service accounts follow the Green Button sample-year load profiles (round-robin, replayed on a
2025 day: see demo.greenbutton), each scaled by its own factor. Most meters report hourly in Wh;
a few report 15-minute intervals, some in kWh.
Into that clean feed go the records a real utility feed carries: re-deliveries, estimated reads
corrected later, late old revisions, sign errors, wrong units, misaligned intervals, meters with
a fast clock and bytes that are not Avro at all. A few thermostats report their state too.
For the baseline service, the weeks before the day are backfilled the same way (:func:`build_history`),
and one read of the day can be held back until the next morning (:func:`hold_back`).

Pure: this module builds records (dicts) and the outcome expected for each; it sends nothing.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from gridflex.calendar import LOCAL_ZONE, local_date, local_day_bounds
from gridflex.topics import METER_READS, THERMOSTAT_STATE

from demo.greenbutton import SampleYear, sample_hour

HOUR = timedelta(hours=1)
TICK_AFTER_HOUR = timedelta(minutes=5)  # the clock ticks to each hour's end + 5 min before its reads go out
CENT = Decimal("0.01")
WH_PER_UNIT = {"WH": Decimal(1), "KWH": Decimal(1000), "MWH": Decimal(1_000_000)}
AVRO_VALUE_SCALE = Decimal("0.000001")  # MeterRead.value is decimal(18, 6)
MIN_ACCOUNTS = 20  # the messy records need 15 distinct hourly meters
DURING_EVENT = "during the event"  # the day's energy event, in THERMOSTAT_SCRIPT

# Verdicts the telemetry service reports (services.telemetry.domain.Verdict values).
NEW, REVISION, DUPLICATE, STALE = "new", "revision", "duplicate", "stale"
LATE_READ = "late read"  # a plain read the head-end delivers after the day (hold_back)


@dataclass(frozen=True)
class ServiceAccount:
    service_account_id: str
    meter_id: str
    profile: str
    scale: Decimal  # this household's consumption relative to its profile
    interval_seconds: int  # 3600 or 900
    unit: str  # WH or KWH

    @property
    def description(self) -> str:
        length = "hourly" if self.interval_seconds == 3600 else "15-min"
        return f"{self.service_account_id} ({length}, {self.unit})"


@dataclass
class Outgoing:
    """One record the demo sends, and what the telemetry service should make of it."""

    topic: str
    key: str
    value: dict | bytes  # bytes: sent as they are, not encoded
    verdict: str | None = None  # the reconciliation verdict expected, or …
    dead_letter: str | None = None  # … the dead-letter reason code expected
    changes: tuple[str, ...] = ()  # thermostat states: the status changes expected
    kind: str | None = None  # what is special about it, for people; None for the plain feed …
    note: str | None = None  # … and the details
    position: tuple[int, int] | None = None  # (partition, offset), once sent


@dataclass
class SimulatedHour:
    start: datetime  # UTC
    end: datetime
    meter_reads: list[Outgoing] = field(default_factory=list)
    thermostat_states: list[Outgoing] = field(default_factory=list)

    @property
    def tick(self) -> datetime:
        return self.end + TICK_AFTER_HOUR

    @property
    def label(self) -> str:
        start, end = self.start.astimezone(LOCAL_ZONE), self.end.astimezone(LOCAL_ZONE)
        if start.tzname() != end.tzname():  # the hour daylight saving time begins or ends
            return f"{start:%H:%M %Z}–{end:%H:%M %Z}"
        return f"{start:%H:%M}–{end:%H:%M}"

    @property
    def notes(self) -> list[Outgoing]:
        return [record for record in [*self.meter_reads, *self.thermostat_states] if record.kind]


@dataclass
class DayScenario:
    day: date
    accounts: list[ServiceAccount]
    hours: list[SimulatedHour]
    # What the clean output must end with: (meter_id, interval_start) → kWh of the latest revision.
    final_kwh: dict[tuple[str, datetime], Decimal]
    # Thermostat states sent before the day's meter reads: the providers' midnight sync.
    opening_states: list[Outgoing] = field(default_factory=list)
    # Reads of the day the head-end delivers only after it (hold_back), and when.
    late_reads: list[Outgoing] = field(default_factory=list)
    late_delivery: datetime | None = None

    @property
    def meter_reads(self) -> list[Outgoing]:
        return [*(record for hour in self.hours for record in hour.meter_reads), *self.late_reads]

    @property
    def thermostat_states(self) -> list[Outgoing]:
        return [*self.opening_states, *(record for hour in self.hours for record in hour.thermostat_states)]

    @property
    def account_by_meter(self) -> dict[str, ServiceAccount]:
        return {account.meter_id: account for account in self.accounts}

    def expected_verdicts(self) -> Counter:
        return Counter(record.verdict for record in self.meter_reads if record.verdict)

    def expected_dead_letters(self) -> Counter:
        return Counter(record.dead_letter for record in self.meter_reads if record.dead_letter)

    def expected_device_changes(self) -> list[tuple[str, str, str]]:
        """(provider, thermostat serial, change) in the order the states are sent."""
        return [
            (record.topic.split(".")[1], record.key, change)
            for record in self.thermostat_states
            for change in record.changes
        ]

    def input_kwh_by_profile(self) -> dict[str, Decimal]:
        by_meter = self.account_by_meter
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for (meter_id, _), kwh in self.final_kwh.items():
            totals[by_meter[meter_id].profile] += kwh
        return dict(totals)


def local_hhmm(instant: datetime) -> str:
    return instant.astimezone(LOCAL_ZONE).strftime("%H:%M")


def in_unit(wh: Decimal, unit: str) -> Decimal:
    """Wh expressed in ``unit``, exact to the six decimals a MeterRead carries."""
    return (wh / WH_PER_UNIT[unit]).quantize(AVRO_VALUE_SCALE)


def fmt_value(value: Decimal, unit: str) -> str:
    return f"{value.normalize():,f} {unit}"


# -- the accounts ---------------------------------------------------------------------------------


def make_accounts(profiles: tuple[str, ...], count: int, rng: random.Random) -> list[ServiceAccount]:
    """``count`` accounts, profiles round-robin; every 10th meter reports 15-minute intervals, every 4th in kWh."""
    accounts = []
    for i in range(count):
        accounts.append(ServiceAccount(
            service_account_id=f"SA-{204100 + i}",
            meter_id=f"M-{61000 + 7 * i}",
            profile=profiles[i % len(profiles)],
            scale=Decimal(str(round(rng.uniform(0.8, 1.3), 3))),
            interval_seconds=900 if i % 10 == 7 else 3600,
            unit="KWH" if i % 4 == 1 else "WH",
        ))
    return accounts


def quarter_hours(wh: Decimal, previous_wh: Decimal, next_wh: Decimal, rng: random.Random) -> list[Decimal]:
    """Split an hour's Wh into four quarter-hours that add up to it exactly.

    The load ramps from the previous hour's level toward the next hour's, with a few per cent of
    meter noise, as a 15-minute meter would see it.
    """
    if wh == 0:
        return [Decimal(0)] * 4
    level, slope = float(wh), (float(next_wh) - float(previous_wh)) / 2  # Wh per hour, per hour
    shape = [max(level + slope * offset, 0.05 * level) * rng.uniform(0.94, 1.06)
             for offset in (-0.375, -0.125, 0.125, 0.375)]  # quarter midpoints, hours from mid-hour
    first_three = [(wh * Decimal(part / sum(shape))).quantize(CENT) for part in shape[:3]]
    last = wh - sum(first_three)
    if last < 0:  # cannot happen with this noise; stay exact and non-negative regardless
        first_three, last = [(wh / 4).quantize(CENT)] * 3, wh - 3 * (wh / 4).quantize(CENT)
    return [*first_three, last]


# -- the day --------------------------------------------------------------------------------------


def build_day(sample: SampleYear, day: date, account_count: int, seed: int) -> DayScenario:
    if account_count < MIN_ACCOUNTS:
        raise ValueError(f"the demo needs at least {MIN_ACCOUNTS} accounts (got {account_count})")
    rng = random.Random(seed)
    accounts = make_accounts(sample.profiles, account_count, rng)
    day_start, day_end = local_day_bounds(day)
    for hour_start in (day_start, day_end - HOUR):  # inside the sample year?
        sample.wh(sample.profiles[0], sample_hour(hour_start))
    hours = []
    start = day_start
    while start < day_end:
        hours.append(SimulatedHour(start, start + HOUR))
        start += HOUR

    scenario = DayScenario(day, accounts, hours, final_kwh={})
    for hour in hours:
        for account in accounts:
            hour.meter_reads += plain_reads(sample, account, hour, rng, scenario.final_kwh)
    _add_messy_reads(scenario, sample, rng)
    _add_thermostat_states(scenario)
    return scenario


def account_wh(sample: SampleYear, account: ServiceAccount, hour_start: datetime) -> Decimal:
    return (sample.wh_or_nearest(account.profile, sample_hour(hour_start)) * account.scale).quantize(CENT)


def meter_read(account: ServiceAccount, start: datetime, seconds: int, wh: Decimal, read_at: datetime, *,
               unit: str | None = None, quality: str = "ACTUAL", revision: int = 0) -> dict:
    unit = unit or account.unit
    return {
        "service_account_id": account.service_account_id, "meter_id": account.meter_id,
        "interval_start": start, "interval_seconds": seconds, "value": in_unit(wh, unit), "unit": unit,
        "quality": quality, "revision": revision, "read_at": read_at, "source": "GREEN_BUTTON",
    }


def plain_reads(sample: SampleYear, account: ServiceAccount, hour: SimulatedHour, rng: random.Random,
                final_kwh: dict, load_factor: Decimal = Decimal(1)) -> list[Outgoing]:
    """The account's reads of one hour, its load times ``load_factor`` (what an energy event leaves of it)."""
    wh = account_wh(sample, account, hour.start)
    if load_factor != 1:
        wh = (wh * load_factor).quantize(CENT)
    read_at = hour.end + timedelta(seconds=rng.randint(60, 240))  # the head-end collects a few minutes after
    if account.interval_seconds == 3600:
        parts = [(hour.start, wh)]
    else:
        quarters = quarter_hours(
            wh, account_wh(sample, account, hour.start - HOUR), account_wh(sample, account, hour.end), rng
        )
        parts = [(hour.start + timedelta(minutes=15 * q), quarter) for q, quarter in enumerate(quarters)]
    reads = []
    for start, part_wh in parts:
        final_kwh[(account.meter_id, start)] = part_wh / 1000
        reads.append(Outgoing(
            METER_READS, account.service_account_id,
            meter_read(account, start, account.interval_seconds, part_wh, read_at), verdict=NEW,
        ))
    return reads


def _add_messy_reads(scenario: DayScenario, sample: SampleYear, rng: random.Random) -> None:
    """A handful of each kind of trouble, spread over the day (hour indexes fit 23-hour days too)."""
    hours = scenario.hours
    hourly = [account for account in scenario.accounts if account.interval_seconds == 3600]
    # The account whose thermostat follows the day's event: enrolled whatever the seed.
    following = scenario.accounts[next(row[4] for row in THERMOSTAT_SCRIPT if row[8] == DURING_EVENT)]
    picks = iter(rng.sample([a for a in hourly if a is not following], 15))  # a different meter for each

    def plain_read(account: ServiceAccount, hour: SimulatedHour) -> Outgoing:
        return next(r for r in hour.meter_reads if r.key == account.service_account_id and not r.kind)

    def send_extra(hour: SimulatedHour, account: ServiceAccount, value: dict | bytes, kind: str, note: str,
                   verdict: str | None = None, dead_letter: str | None = None) -> None:
        hour.meter_reads.append(Outgoing(METER_READS, account.service_account_id, value, verdict=verdict,
                                         dead_letter=dead_letter, kind=kind, note=f"{account.service_account_id} {note}"))

    # Estimated reads (revision 0) corrected two hours later by an actual read (revision 1);
    # for two of them a copy of the old estimate arrives later still (stale). The third is of an
    # hour of the afternoon's energy event (14:00–17:00) on an enrolled account, corrected once
    # the event's last hour is in: the baseline result computed from the estimate is revised.
    in_event = next(i for i, hour in enumerate(hours) if hour.start.astimezone(LOCAL_ZONE).hour == 15)  # 15:00–16:00
    for estimated_at, stale_at, account in ((2, 7, next(picks)), (9, None, next(picks)),
                                            (in_event, in_event + 4, following)):
        hour, corrected = hours[estimated_at], hours[estimated_at + 2]
        estimate_wh = account_wh(sample, account, hour.start - timedelta(days=1))  # same hour yesterday
        estimate = plain_read(account, hour)
        estimate.value = meter_read(account, hour.start, 3600, estimate_wh, estimate.value["read_at"],
                                    quality="ESTIMATED")
        estimate.kind = "estimated read"
        estimate.note = (f"{account.service_account_id} {hour.label}: {fmt_value(estimate.value['value'], account.unit)} "
                         "ESTIMATED, revision 0 (from the same hour yesterday)")
        actual = meter_read(account, hour.start, 3600, account_wh(sample, account, hour.start),
                            corrected.end + timedelta(minutes=2), revision=1)
        send_extra(corrected, account, actual, "revised read", f"{hour.label}: revision 1 ACTUAL "
                   f"{fmt_value(actual['value'], account.unit)} replaces the estimate", verdict=REVISION)
        if stale_at is not None:
            send_extra(hours[stale_at], account, dict(estimate.value), "late revision 0",
                       f"{hour.label}: the old estimate again, after revision 1", verdict=STALE)

    # Exact re-deliveries of a read sent the hour before (a head-end retrying a batch).
    for at in (3, 12, 20):
        account, previous = next(picks), hours[at - 1]
        send_extra(hours[at], account, dict(plain_read(account, previous).value), "re-delivery",
                   f"{previous.label}: an exact copy of last hour's read", verdict=DUPLICATE)

    # Reads the service must refuse (each after the good read of its interval, which stands).
    for at in (5, 17):
        account, hour = next(picks), hours[at]
        good = plain_read(account, hour).value
        read = dict(good, value=-good["value"])
        send_extra(hour, account, read, "negative value", f"{hour.label}: {fmt_value(read['value'], read['unit'])} "
                   "(sign error)", dead_letter="NEGATIVE_VALUE")
    for at in (6, 21):
        account, hour = next(picks), hours[at]
        read = meter_read(account, hour.start, 3600, account_wh(sample, account, hour.start), hour.end, unit="MWH")
        send_extra(hour, account, read, "unknown unit", f"{hour.label}: {fmt_value(read['value'], 'MWH')}",
                   dead_letter="UNKNOWN_UNIT")
    for at in (8, 13):
        account, hour = next(picks), hours[at]
        start = hour.start + timedelta(minutes=7, seconds=30)
        read = meter_read(account, start, 3600, account_wh(sample, account, hour.start), hour.end)
        send_extra(hour, account, read, "misaligned", f"{hour.label}: an hourly interval starting at "
                   f"{start.astimezone(LOCAL_ZONE):%H:%M:%S}", dead_letter="MISALIGNED_INTERVAL")
    for at in (10, 18):
        account, hour = next(picks), hours[at]
        ahead = hour.start + 3 * HOUR
        read = meter_read(account, ahead, 3600, account_wh(sample, account, ahead), hour.tick)
        send_extra(hour, account, read, "from the future", f"{local_hhmm(ahead)}–{local_hhmm(ahead + HOUR)} sent at "
                   f"{local_hhmm(hour.tick)} (meter clock 3 h fast)", dead_letter="FUTURE_TIMESTAMP")
    account, hour = next(picks), hours[15]
    garbage = f"{account.service_account_id},{account.meter_id},{hour.start:%Y-%m-%dT%H:%M:%SZ},1234.5,WH\n".encode()
    send_extra(hour, account, garbage, "undecodable", f"{hour.label}: a CSV line instead of Avro "
               f"({len(garbage)} bytes)", dead_letter="UNDECODABLE")


def hold_back(scenario: DayScenario, service_account_id: str, hour_start: datetime, delivered_at: datetime) -> Outgoing:
    """Take one account's plain read of an hour out of the day's stream: the meter did not answer,
    and the head-end delivers the read at ``delivered_at``, after the day (``late_reads``)."""
    hour = next(hour for hour in scenario.hours if hour.start == hour_start)
    read = next(r for r in hour.meter_reads if r.key == service_account_id and not r.kind)
    if read.value["interval_seconds"] != 3600:
        raise ValueError(f"{service_account_id} does not report hourly: one read is not the whole hour")
    hour.meter_reads.remove(read)
    read.value = dict(read.value, read_at=delivered_at - timedelta(minutes=2))
    read.kind = LATE_READ
    read.note = (f"{service_account_id} {hour.label}: the meter did not answer; the head-end delivers its read at "
                 f"{delivered_at.astimezone(LOCAL_ZONE):%H:%M} the next morning")
    scenario.late_reads.append(read)
    scenario.late_delivery = delivered_at
    return read


def build_history(sample: SampleYear, accounts: list[ServiceAccount], first_day: date, day: date, seed: int,
                  service_start: dict[str, date]) -> list[Outgoing]:
    """Every account's plain reads for the local days from ``first_day`` to the day before ``day``,
    as the head-end backfills them: the same replayed sample year, scale, meter and unit as the
    day's (:func:`plain_reads`), from the account's service start on (a move-in has no usage before)."""
    rng = random.Random(f"history-{seed}")  # its own stream: the day's records stay as they are
    start, _ = local_day_bounds(first_day)
    end, _ = local_day_bounds(day)
    reads: list[Outgoing] = []
    kwh: dict = {}
    while start < end:
        hour, today = SimulatedHour(start, start + HOUR), local_date(start)
        for account in accounts:
            if service_start.get(account.service_account_id, first_day) <= today:
                reads += plain_reads(sample, account, hour, rng, kwh)
        start += HOUR
    return reads


# (hour index, minute, provider, serial, account index, online, setpoint °F, indoor °F, event, override, changes);
# hour None: the providers' state sync at midnight, sent before the day's meter reads.
THERMOSTAT_SCRIPT = [
    (None, 0, "energyhub", "EH-00F1-22A9", 0, True, 76.0, 74.5, None, False, ("FIRST_SEEN",)),
    (None, 0, "energyhub", "EH-00F1-31C4", 1, True, 75.0, 73.0, None, False, ("FIRST_SEEN",)),
    (None, 0, "resideo", "RS-7Q2K-0045", 2, True, 77.0, 75.5, None, False, ("FIRST_SEEN",)),
    (None, 0, "resideo", "RS-7Q2K-0187", 3, False, 78.0, None, None, False, ("FIRST_SEEN",)),
    (9, 3, "resideo", "RS-7Q2K-0187", 3, True, 78.0, 77.0, None, False, ("WENT_ONLINE",)),
    (12, 30, "energyhub", "EH-00F1-22A9", 0, True, 76.0, 75.5, None, False, ()),  # nothing changed
    (14, 0, "energyhub", "EH-00F1-31C4", 1, True, 79.0, 74.0, DURING_EVENT, False, ()),  # following the event
    (15, 40, "energyhub", "EH-00F1-31C4", 1, True, 72.0, 76.5, DURING_EVENT, True, ("OVERRIDE",)),
    (16, 25, "resideo", "RS-7Q2K-0045", 2, False, 77.0, None, None, False, ("WENT_OFFLINE",)),
    (18, 10, "energyhub", "EH-00F1-22A9", 0, True, 76.0, 76.0, None, False, ()),  # nothing changed
]


def event_id(day: date) -> str:
    """The id of the energy event the utility called on ``day`` (thermostats report following it)."""
    return f"EV-{day:%Y-%m%d}-A"


def reporting_thermostats() -> list[tuple[str, str, int]]:
    """(provider, thermostat serial, account index) of every thermostat that reports its state."""
    return list(dict.fromkeys((provider, serial, index) for _, _, provider, serial, index, *_ in THERMOSTAT_SCRIPT))


def _add_thermostat_states(scenario: DayScenario) -> None:
    for at, minute, provider, serial, account_index, online, setpoint, indoor, during, override, changes in (
        THERMOSTAT_SCRIPT
    ):
        hour_start = scenario.hours[at or 0].start
        event = event_id(scenario.day) if during == DURING_EVENT else None
        account = scenario.accounts[account_index]
        state = {
            "thermostat_serial": serial, "service_account_id": account.service_account_id,
            "observed_at": hour_start + timedelta(minutes=minute), "online": online, "hvac_mode": "COOL",
            "cool_setpoint_f": setpoint, "indoor_temp_f": indoor, "event_id": event, "override": override,
        }
        reported = ", ".join(filter(None, [
            "online" if online else "offline", override and "override", event and f"event {event}",
        ]))
        expect = ", ".join(changes) if changes else "no change"
        sent_with = scenario.opening_states if at is None else scenario.hours[at].thermostat_states
        sent_with.append(Outgoing(
            THERMOSTAT_STATE.format(provider_id=provider), serial, state, changes=changes,
            kind="thermostat", note=f"{provider}/{serial}: {reported} → expect {expect}",
        ))
