"""What came out of the telemetry service, measured against what the demo sent, as tables for people.

Everything here reads the service's outputs (its topics and its /metrics); the scenario only
says what to expect.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families

from gridflex.codec import Undecodable
from gridflex.topics import DEAD_LETTERS, DEVICE_STATUS, METER_INTERVALS, METER_READS

from demo.greenbutton import profile_title
from demo.scenario import HOUR, DUPLICATE, NEW, REVISION, STALE, DayScenario, Outgoing, local_hhmm

SPARK = "▁▂▃▄▅▆▇█"
VERDICT_MEANING = {
    NEW: "first sight of an interval: emitted",
    REVISION: "a higher revision: emitted, superseding the lower",
    DUPLICATE: "an exact re-delivery: dropped",
    STALE: "a lower revision arriving late: dropped",
    "conflict": "same revision, different content: dead letter",
    "replay": "re-read after a restart or rebalance: re-emitted, same identity",
}


# -- the service's /metrics -----------------------------------------------------------------------


@dataclass
class TelemetryMetrics:
    """The counters of one telemetry process that the demo watches."""

    verdicts: Counter = field(default_factory=Counter)  # gridflex_telemetry_intervals_total{verdict}
    dead_letters: Counter = field(default_factory=Counter)  # (source topic, reason code) → count
    records_out: Counter = field(default_factory=Counter)  # topic → count
    device_changes: Counter = field(default_factory=Counter)

    @classmethod
    def parse(cls, text: str) -> "TelemetryMetrics":
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels, value = sample.labels, int(sample.value)
                if sample.name == "gridflex_telemetry_intervals_total":
                    metrics.verdicts[labels["verdict"]] += value
                elif sample.name == "gridflex_dead_letters_total":
                    metrics.dead_letters[(labels["source_topic"], labels["reason_code"])] += value
                elif sample.name == "gridflex_records_out_total":
                    metrics.records_out[labels["topic"]] += value
                elif sample.name == "gridflex_telemetry_device_changes_total":
                    metrics.device_changes[labels["change"]] += value
        return metrics

    def since(self, earlier: "TelemetryMetrics") -> "TelemetryMetrics":
        """What the service did after ``earlier`` was scraped (the day, without the backfill before it)."""
        return TelemetryMetrics(self.verdicts - earlier.verdicts, self.dead_letters - earlier.dead_letters,
                                self.records_out - earlier.records_out, self.device_changes - earlier.device_changes)

    @property
    def reads_handled(self) -> int:
        """Meter reads handled: reconciled or dead-lettered (a replay is a read handled before)."""
        return sum(n for verdict, n in self.verdicts.items() if verdict != "replay") + self.meter_dead_letters

    @property
    def settled(self) -> bool:
        """Every output decided so far is acknowledged by Kafka (outputs are counted on
        acknowledgement, decisions when they are made)."""
        emitted = sum(n for verdict, n in self.verdicts.items() if verdict in ("new", "revision", "replay"))
        return (self.records_out[METER_INTERVALS] == emitted
                and self.records_out[DEAD_LETTERS] == sum(self.dead_letters.values())
                and self.records_out[DEVICE_STATUS] == sum(self.device_changes.values()))

    @property
    def snapshot(self) -> tuple:
        """Everything that moves when the service handles a record."""
        return (tuple(sorted(self.verdicts.items())), tuple(sorted(self.records_out.items())),
                tuple(sorted(self.dead_letters.items())))

    @property
    def meter_dead_letters(self) -> int:
        return sum(n for (topic, _), n in self.dead_letters.items() if topic == METER_READS)

    @property
    def intervals_out(self) -> int:
        return self.records_out[METER_INTERVALS]

    @property
    def dead_letters_out(self) -> int:
        return self.records_out[DEAD_LETTERS]

    @property
    def device_statuses_out(self) -> int:
        return self.records_out[DEVICE_STATUS]

    @property
    def dropped(self) -> int:
        return self.verdicts[DUPLICATE] + self.verdicts[STALE]


# -- tables -----------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list], right: set[int] = frozenset(), indent: str = "  ") -> str:
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("─" * w for w in widths))
    return "\n".join(lines)


def heading(text: str) -> str:
    return f"\n{text}\n{'═' * len(text)}"


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def sparkline(values: list[Decimal]) -> str:
    top = max(values, default=Decimal(0))
    if not top:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(int(v / top * len(SPARK)), len(SPARK) - 1)] for v in values)


# -- the report ---------------------------------------------------------------------------------------


@dataclass
class Check:
    what: str
    ok: bool


class Checks:
    """What a report verified: each check by name, and which failed."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def check(self, what: str, ok: bool) -> bool:
        self.checks.append(Check(what, ok))
        return ok

    @property
    def failures(self) -> list[str]:
        return [check.what for check in self.checks if not check.ok]


@dataclass
class Outputs:
    """The records read back from the service's output topics."""

    intervals: list[dict]
    dead_letters: list[dict]
    device_statuses: list[dict]
    undecodable: int = 0  # output records the demo could not decode (there should be none)


class Report(Checks):
    def __init__(self, scenario: DayScenario, metrics: TelemetryMetrics, outputs: Outputs, zone_name: str,
                 topic_suffix: str):
        super().__init__()
        self.scenario = scenario
        self.metrics = metrics
        self.outputs = outputs
        self.zone = zone_name
        self.suffix = topic_suffix
        # Each dead letter names where its record was: (catalogue topic, partition, offset).
        self.rejected = {
            (d["source_topic"].removesuffix(topic_suffix), d["source_partition"], d["source_offset"]): d
            for d in outputs.dead_letters
        }

    def render(self) -> str:
        return "\n".join([
            self.flow(), self.reconciliation(), self.dead_letters(), self.profile_loads(), self.device_changes(),
        ])

    # What went in, what came out.
    def flow(self) -> str:
        s, m = self.scenario, self.metrics
        reads = s.meter_reads
        expected = s.expected_verdicts()
        dead = s.expected_dead_letters()
        identities = {(i["meter_id"], i["interval_start"], i["revision"]) for i in self.outputs.intervals}
        replays = len(self.outputs.intervals) - len(identities)
        out_expected = expected[NEW] + expected[REVISION]
        plain = sum(1 for r in reads if r.kind is None)
        rows = [
            ["meter reads sent", f"{len(reads):,}", f"{len(reads):,}",
             f"{plain:,} plain + {len(reads) - plain} special (estimates, corrections, trouble)"],
            ["  clean intervals out", f"{len(identities):,}", f"{out_expected:,}",
             f"{m.verdicts[NEW]:,} new + {m.verdicts[REVISION]} revisions"
             + (f" (+{replays} replayed copies)" if replays else "")],
            ["  dropped: re-deliveries", m.verdicts[DUPLICATE], expected[DUPLICATE], "exact repeats"],
            ["  dropped: stale revisions", m.verdicts[STALE], expected[STALE], "older than what was already emitted"],
            ["  dead letters", m.meter_dead_letters, sum(dead.values()), "rejected with a reason (below)"],
            ["thermostat states sent", len(s.thermostat_states), len(s.thermostat_states), ""],
            ["  device status changes out", len(self.outputs.device_statuses), len(s.expected_device_changes()),
             "only changes are emitted"],
        ]
        rejected = sum(1 for topic, _, _ in self.rejected if topic == METER_READS)
        balance = len(identities) + m.dropped + rejected
        self.check("every meter read accounted for (out + dropped + dead letters = sent)", balance == len(reads))
        self.check("clean intervals out as expected", len(identities) == out_expected)
        self.check("output records all decode", self.outputs.undecodable == 0)
        lines = [heading("What went in and what came out"),
                 table(["", "seen", "expected", ""], rows, right={1, 2})]
        equals = "=" if balance == len(reads) else "≠"
        lines.append(f"\n  {len(identities):,} out + {m.dropped} dropped + {rejected} dead letters "
                     f"= {balance:,} {equals} {len(reads):,} sent {mark(balance == len(reads))}")
        lost = self.lost_reads(identities)
        self.check(f"no meter read lost ({len(lost)} neither came out nor were dead-lettered)", not lost)
        if lost:
            lines.append(f"\n  ✗ {len(lost)} meter reads were neither emitted nor dead-lettered (partition/offset on "
                         f"{METER_READS}):")
            for record in lost[:12]:
                v, (partition, offset) = record.value, record.position
                lines.append(f"      {partition}/{offset:<5} {v['service_account_id']} {v['meter_id']} "
                             f"{local_hhmm(v['interval_start'])} revision {v['revision']}")
            if len(lost) > 12:
                lines.append(f"      … and {len(lost) - 12} more")
        return "\n".join(lines)

    def lost_reads(self, identities: set) -> list[Outgoing]:
        """Reads that should have come out (new or revision) or been dead-lettered, and did neither."""
        lost = []
        for record in self.scenario.meter_reads:
            if record.verdict in (NEW, REVISION):
                v = record.value
                if (v["meter_id"], v["interval_start"], v["revision"]) not in identities:
                    lost.append(record)
            elif record.dead_letter and (record.topic, *record.position) not in self.rejected:
                lost.append(record)
        return lost

    # Reconciliation verdicts from the service's own counters.
    def reconciliation(self) -> str:
        expected = self.scenario.expected_verdicts()
        rows = []
        for verdict, meaning in VERDICT_MEANING.items():
            seen = self.metrics.verdicts[verdict]
            want = "–" if verdict == "replay" else expected[verdict]
            # A record re-read after a rebalance is counted again; then at least the expected count will do.
            ok = verdict == "replay" or seen == expected[verdict] or (self.replayed and seen >= expected[verdict])
            self.check(f"verdict {verdict}: {seen} (expected {want})", ok)
            rows.append([verdict, f"{seen:,}", want if isinstance(want, str) else f"{want:,}", mark(ok), meaning])
        return "\n".join([
            heading("Reconciliation (the service's /metrics: gridflex_telemetry_intervals_total)"),
            table(["verdict", "count", "expected", "", "meaning"], rows, right={1, 2}),
        ])

    # Every dead letter, matched to the record the demo sent.
    def dead_letters(self) -> str:
        sent = {(r.topic, *r.position): r for r in [*self.scenario.meter_reads, *self.scenario.thermostat_states]
                if r.position}
        expected = self.scenario.expected_dead_letters()
        seen = Counter(d["reason_code"] for d in self.outputs.dead_letters)
        rows = []
        for code in sorted(set(expected) | set(seen)):
            ok = seen[code] == expected[code]
            self.check(f"dead letters {code}: {seen[code]} (expected {expected[code]})", ok)
            rows.append([code, seen[code], expected[code], mark(ok)])
        lines = [heading("Dead letters by reason code (gridflex.dead-letters.v1)"),
                 table(["reason code", "count", "expected", ""], rows, right={1, 2}), ""]
        for where, letter in sorted(self.rejected.items(), key=lambda item: (item[1]["reason_code"], item[0])):
            record: Outgoing | None = sent.get(where)
            meant = record is not None and record.dead_letter == letter["reason_code"]
            self.check(f"dead letter {letter['reason_code']} for {where} is one the demo meant", meant)
            what = f"{record.kind}: {record.note}" if meant else "(a record the demo did not mean to reject)"
            lines.append(f"  {mark(meant)} {letter['reason_code']:<20} {what}")
            lines.append(f"    {'':<20} ↳ {letter['reason']}")
        return "\n".join(lines)

    # The day's load per profile, from the clean output only.
    def profile_loads(self) -> str:
        s = self.scenario
        by_meter = s.account_by_meter
        latest: dict[tuple[str, datetime], dict] = {}
        for interval in self.outputs.intervals:
            slot = (interval["meter_id"], interval["interval_start"])
            if slot not in latest or interval["revision"] > latest[slot]["revision"]:
                latest[slot] = interval
        day_start = s.hours[0].start
        hourly: dict[str, list[Decimal]] = {p: [Decimal(0)] * len(s.hours) for p in self._profiles()}
        for (meter_id, start), interval in latest.items():
            hourly[by_meter[meter_id].profile][int((start - day_start) / HOUR)] += interval["kwh"]
        inputs = s.input_kwh_by_profile()
        self.check("every interval of the day came out, latest revision as sent",
                   {slot: i["kwh"] for slot, i in latest.items()} == s.final_kwh)
        rows, total_out, total_in = [], Decimal(0), Decimal(0)
        for profile in self._profiles():
            kwh_out, kwh_in = sum(hourly[profile]), inputs[profile]
            total_out, total_in = total_out + kwh_out, total_in + kwh_in
            ok = self.check(f"{profile}: output {kwh_out} kWh = input {kwh_in} kWh", kwh_out == kwh_in)
            peak = max(range(len(s.hours)), key=lambda h: hourly[profile][h])
            accounts = sum(1 for a in s.accounts if a.profile == profile)
            rows.append([
                profile_title(profile), accounts, f"{kwh_out:,.3f}", f"{kwh_in:,.3f} {mark(ok)}",
                s.hours[peak].label, f"{hourly[profile][peak]:,.2f}", sparkline(hourly[profile]),
            ])
        rows.append(["all", len(s.accounts), f"{total_out:,.3f}", f"{total_in:,.3f} {mark(total_out == total_in)}",
                     "", "", ""])
        units = Counter(a.unit for a in s.accounts)
        return "\n".join([
            heading("The day's load per profile, from the clean output (latest revision of each interval)"),
            table(["profile", "accounts", "kWh out", "kWh sent", f"peak hour ({self.zone})", "kWh in peak",
                   "00h → 24h"], rows, right={1, 2, 3, 5}),
            f"\n  {units['WH']} meters report Wh and {units['KWH']} kWh; the service turns both into kWh, and the "
            f"sums match the input to the last digit ({mark(total_out == total_in)}: exact decimals, no floats).",
        ])

    def device_changes(self) -> str:
        expected = self.scenario.expected_device_changes()
        seen = [(d["provider_id"], d["thermostat_serial"], d["change"]) for d in self.outputs.device_statuses]
        ok = self.check(f"device status changes: {len(seen)} of {len(expected)} expected",
                        Counter(seen) == Counter(expected))
        rows = []
        for d in sorted(self.outputs.device_statuses, key=lambda d: (d["observed_at"], d["thermostat_serial"])):
            detail = ", ".join(filter(None, [
                "online" if d["online"] else "offline", d["hvac_mode"],
                f"setpoint {d['cool_setpoint_f']:g} °F" if d["cool_setpoint_f"] is not None else None,
                f"indoor {d['indoor_temp_f']:g} °F" if d["indoor_temp_f"] is not None else None,
                f"event {d['event_id']}" if d["event_id"] else None,
            ]))
            rows.append([local_hhmm(d["observed_at"]), d["provider_id"], d["thermostat_serial"],
                         d["service_account_id"], d["change"], detail])
        return "\n".join([
            heading(f"Device status changes (gridflex.telemetry.device-status.v1): {len(seen)} of {len(expected)} "
                    f"expected {mark(ok)}"),
            table([f"observed ({self.zone})", "provider", "thermostat", "account", "change", "state"], rows),
        ])

    @property
    def replayed(self) -> bool:
        return self.metrics.verdicts["replay"] > 0

    def _profiles(self) -> list[str]:
        return list(dict.fromkeys(a.profile for a in self.scenario.accounts))


def decoded(records: list) -> tuple[list[dict], int]:
    """The decoded values of ``read_records`` results, and how many did not decode."""
    values = [r.value for r in records if not isinstance(r.value, Undecodable)]
    return values, len(records) - len(values)
