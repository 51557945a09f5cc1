"""`make demo`: providers enroll thermostats in the SCE Smart Energy Program, one summer day of
household meter reads and an energy event in detail, then the rest of the summer on the three
programs open in 2025, settled in the billing ledger: all five services, end to end.

What it shows, on the local stack (`make up`) and nothing else:

- the four services running as real processes on one simulated clock, on a private copy of the topics
  (suffix ``-demo-<hex6>``) and a private Postgres schema (``demo_<hex6>``), so reruns never mix
  with earlier runs; the providers' API tokens are minted with ``gridflex partner credential``;
- the weeks before the day, step by step (demo.enrollment): the utility publishes its service
  accounts, EnergyHub and Resideo send enrollment requests for ``sce-sep-2025``, most on their
  Kafka topics and some over the HTTP API with their own tokens (and a token used for the other
  provider's path, and no token at all); eligible and ineligible accounts, a re-delivered
  request, an account published a day late, a mistyped account, a utility-program thermostat, a
  second thermostat, a customer who cancels;
- the day itself (demo.scenario): the Green Button sample year's load, replayed on 2025 (same
  weekday, 730 weeks later), spread over ~60 accounts, streamed hour by hour with the trouble a
  real feed carries, and the enrolled thermostats reporting their state;
- the day's energy events (demo.dispatch_phase): the utility calls an afternoon event with
  precool, two more that break the program's limits (rejected with every rule named), and
  shortens the first; the dispatch service instructs every thermostat in effect that day and the
  update to the same ones, the providers acknowledge all but one, the event starts and ends as
  the clock passes; coverage and the silent thermostat on /metrics and `gridflex events`;
- the event's performance (demo.baseline_phase): three weeks of usage before the day backfilled
  through telemetry at midnight; when the event ends, every account in effect waits for its last
  hour on /metrics, then gets its CSRL baseline, actual usage and reduction, one only after its
  held-back read arrives the next morning, one revised by a corrected read; each figure checked
  against an oracle worked out from the sample data;
- the rest of the summer (demo.summer, demo.summer_phase): more households sign up for Save Power
  Days and ohm-hours; the clock runs a day at a time to the end of September, with every
  account's reads and events on all three programs; thermostats follow, override or are offline;
  late and corrected reads, a customer who leaves, malformed records; every bill period closes;
- the settlement report (demo.settlement_report, demo.html_report): per event and per program,
  statements with each line's cause, checked cent for cent against an oracle; also written as
  HTML with charts to var/demo/settlement-report.html;
- at the end, read back from the services' outputs (topics, /metrics, the HTTP API) and checked
  against what was sent: decisions with every failed rule, effective dates, sign-up bonuses,
  enrollment state; clean intervals vs dead letters, the day's load per profile, device status.

Run: ``python -m demo [--accounts 60] [--day 2025-07-16]``. Exits 0 when everything came out as
expected, 1 when it did not or a service failed (logs in var/log/demo-<service>.log), 2 for a day
the replayed sample year or the program does not cover, 130 on Ctrl-C (the services are stopped
in every case).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

import asyncpg
from aiokafka.errors import KafkaError

from gridflex import REPO_ROOT
from gridflex.calendar import LOCAL_ZONE, local_date
from gridflex.db import with_search_path
from gridflex.kafka_io import RecordProducer
from gridflex.processes import ServiceFailed, ServiceProcess, isolated_env, isolated_topics
from gridflex.programs import ProgramCatalogue
from gridflex.settings import ServiceSettings
from gridflex.topics import (
    CLOCK,
    DEAD_LETTERS,
    DEVICE_STATUS,
    ENROLLMENT_DECISIONS,
    ENROLLMENT_STATE,
    INCENTIVES,
    METER_INTERVALS,
    METER_READS,
    delete_topics_containing,
)

from demo.driving import (
    DemoFailed,
    collect,
    distinct,
    port_in_use,
    readable_log,
    relative,
    scrape,
    send_records,
    tick,
    wait_for_progress,
    wait_until,
)
from demo.enrollment import (
    FIRST_REQUEST_DAYS_BEFORE,
    HTTP,
    KAFKA,
    PROGRAM_ID,
    PROVIDERS,
    UNKNOWN_ACCOUNT_WAIT,
    EnrollmentScenario,
    build_enrollment,
)
from demo.baseline_phase import (
    HISTORY_DAYS,
    BaselineDay,
    BaselinePlan,
    BaselineReport,
    accounts_in_effect,
    plan_baseline,
    read_baseline,
)
from demo.dispatch_phase import DispatchReport, call_events, in_effect_today, plan_events, read_dispatch
from demo.enrollment_phase import ProviderApi, run_enrollment
from demo.enrollment_report import EnrollmentMetrics, EnrollmentOutputs, EnrollmentReport
from demo.greenbutton import SAMPLE_YEAR_CSV, REPLAY_WEEKS, OutsideSampleYear, SampleYear, replayed_days, sample_day
from demo.report import Outputs, Report, TelemetryMetrics, decoded
from demo.scenario import WH_PER_UNIT, MIN_ACCOUNTS, DayScenario, Outgoing, SimulatedHour, build_day
from demo.html_report import check_curves, event_curves, write_html
from demo.settlement_report import SettlementReport, read_ledger
from demo.summer import PROVIDERS_BY_PROGRAM, SummerPlan, plan_summer
from demo.summer_phase import SummerServices, run_summer, settle_summer

LOG_DIR = REPO_ROOT / "var" / "log"
LOGS = {service: LOG_DIR / f"demo-{service}.log"
        for service in ("enrollment", "telemetry", "dispatch", "baseline", "settlement")}
HTML_REPORT = REPO_ROOT / "var" / "demo" / "settlement-report.html"
ALL_PROVIDERS = (*PROVIDERS, *(p for providers in PROVIDERS_BY_PROGRAM.values() for p in providers if p not in PROVIDERS))
HOUR_TIMEOUT_S = 60.0  # for the service to handle one hour's reads (a rebalance can pause it for seconds)
QUIET_S = 5.0  # … or to show no progress at all, short of handling them
DEVICE_TIMEOUT_S = 60.0  # partner topics are discovered every 10 s, then subscribed after a rebalance
SERVICE_READY_S = 90.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=60, help="service accounts to simulate (default 60)")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2025, 7, 16),
                        help="the local day of meter reads, in 2025 (default 2025-07-16, a Wednesday: the load of "
                             "Wednesday 2011-07-20); enrollment happens in the weeks before")
    parser.add_argument("--seed", type=int, default=2011, help="seed for the per-account factors, noise and sign-ups")
    parser.add_argument("--web-port", type=int, default=8101, help="the telemetry service's /metrics port")
    parser.add_argument("--enrollment-port", type=int, default=8102,
                        help="the enrollment service's port (HTTP API and /metrics)")
    parser.add_argument("--dispatch-port", type=int, default=8103, help="the dispatch service's /metrics port")
    parser.add_argument("--baseline-port", type=int, default=8104, help="the baseline service's /metrics port")
    parser.add_argument("--settlement-port", type=int, default=8105,
                        help="the settlement service's port (HTTP API and /metrics)")
    args = parser.parse_args(argv)
    if args.accounts < MIN_ACCOUNTS:
        parser.error(f"--accounts must be at least {MIN_ACCOUNTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # aiokafka logs retries it recovers from (e.g. a new topic's leader not elected yet); not news here.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started = time.monotonic()
    sample = SampleYear.load()
    programs = ProgramCatalogue.load(REPO_ROOT / "programs")
    first, last = replayed_days(sample)
    # The first sign-ups may be dated the day before the first step: the program must be open then.
    first = max(first, programs[PROGRAM_ID].effective_from + timedelta(days=FIRST_REQUEST_DAYS_BEFORE + 1))
    try:
        if not first <= args.day <= last:
            raise OutsideSampleYear(f"{args.day} is outside what the demo covers")
        scenario = build_day(sample, args.day, args.accounts, args.seed)
    except OutsideSampleYear as exc:
        print(f"demo: {exc.args[0]}; pick a --day from {first} to {last} (the sample year replayed "
              f"{REPLAY_WEEKS} weeks later, with {PROGRAM_ID} open for the weeks of sign-ups before)", file=sys.stderr)
        return 2
    enrollment = build_enrollment(scenario, programs, args.seed)
    event_plan = plan_events(scenario.day, scenario.hours[0].start)
    baseline_plan = plan_baseline(sample, scenario, enrollment, event_plan, args.seed)
    summer = plan_summer(sample, scenario, enrollment, programs, scenario.day - timedelta(days=HISTORY_DAYS), args.seed)
    suffix = f"-demo-{secrets.token_hex(3)}"
    settings = ServiceSettings(topic_suffix=suffix)
    schema = f"demo_{suffix.rsplit('-', 1)[1]}"
    database_url = with_search_path(settings.database_url, schema)
    zone = scenario.hours[0].start.astimezone(LOCAL_ZONE).tzname()
    introduce(scenario, enrollment, baseline_plan, summer, settings, args, zone, schema)

    ports = {"enrollment": (args.enrollment_port, "--enrollment-port"), "telemetry": (args.web_port, "--web-port"),
             "dispatch": (args.dispatch_port, "--dispatch-port"), "baseline": (args.baseline_port, "--baseline-port"),
             "settlement": (args.settlement_port, "--settlement-port")}
    for service, (port, option) in ports.items():
        if port_in_use(port):
            print(f"\ndemo: port {port} is taken (another {service} service?); stop it or pass {option}",
                  file=sys.stderr)
            return 1
    wait_s = str(int(UNKNOWN_ACCOUNT_WAIT.total_seconds()))
    enroller = ServiceProcess("enrollment", isolated_env(
        suffix, GRIDFLEX_DATABASE_URL=database_url, GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S=wait_s,
    ), web_port=args.enrollment_port, log_path=LOGS["enrollment"])
    telemetry = ServiceProcess("telemetry", isolated_env(suffix), web_port=args.web_port, log_path=LOGS["telemetry"])
    dispatcher = ServiceProcess("dispatch", isolated_env(suffix, GRIDFLEX_DATABASE_URL=database_url),
                                web_port=args.dispatch_port, log_path=LOGS["dispatch"])
    baseline = ServiceProcess("baseline", isolated_env(suffix), web_port=args.baseline_port, log_path=LOGS["baseline"])
    first_open_day = local_date(enrollment.steps[0].at).isoformat()  # settlement closes bill periods from then on
    settler = ServiceProcess("settlement", isolated_env(
        suffix, GRIDFLEX_DATABASE_URL=database_url, GRIDFLEX_SETTLEMENT_FIRST_OPEN_DAY=first_open_day,
    ), web_port=args.settlement_port, log_path=LOGS["settlement"])
    services = [enroller, telemetry, dispatcher, baseline, settler]
    summer_services = SummerServices(enroller, telemetry, dispatcher, baseline, settler)
    baseline_day = BaselineDay(baseline_plan, baseline, telemetry)
    try:
        asyncio.run(prepare(settings, enrollment.steps[0].at, schema))
        tokens = mint_tokens(database_url)
        operator_token = mint_credential(database_url, "operator", "demo-operator")
        mark_logs(suffix)
        print("starting the enrollment, telemetry, dispatch, baseline and settlement services … ", end="", flush=True)
        ready_since = time.monotonic()
        with ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(lambda service: service.start(SERVICE_READY_S), services))
        print(f"up in {time.monotonic() - ready_since:.1f} s "
              f"(pids {', '.join(str(service.process.pid) for service in services)})")
        api_url = f"http://127.0.0.1:{args.enrollment_port}"
        enrollment_metrics, answers = asyncio.run(
            enrollment_weeks(settings, enroller, [telemetry, baseline], ProviderApi(api_url, tokens), enrollment))
        states = asyncio.run(enrollment_states(settings, enrollment_metrics))
        in_effect = in_effect_today(states, scenario.day)
        asyncio.run(call_events(settings, dispatcher, event_plan, PROVIDERS, len(in_effect)))
        metrics = asyncio.run(stream_day(settings, telemetry, enroller, scenario, zone, baseline_day))
        outputs, enrollment_metrics, enrollment_outputs = asyncio.run(
            read_back(settings, metrics, enroller, answers, scenario, baseline_day.backfilled.intervals_out))
        dispatch_outcome = asyncio.run(read_dispatch(settings, dispatcher, event_plan, PROVIDERS))
        baseline_outcome = asyncio.run(
            read_baseline(settings, baseline_day, accounts_in_effect(states, scenario.day)))
        summer_s = asyncio.run(run_summer(settings, summer_services, summer))
        summer_outcome = asyncio.run(settle_summer(settings, summer_services, summer, summer_s))
        event_ids = [baseline_plan.event_id, *(event.event_id for event in summer.events)]
        ledger = asyncio.run(read_ledger(
            database_url, f"http://127.0.0.1:{args.settlement_port}", operator_token,
            {provider: tokens[provider] for provider in ("nest-labs", "ohmconnect")}, summer, event_ids))
    except ServiceFailed as exc:
        what, _, tail = str(exc).partition("\n")
        log = LOGS.get(what.split(" ", 1)[0])
        print(f"\n\ndemo FAILED: {what.rstrip(':')}. The end of its log:\n{readable_log(tail)}\n\n"
              f"full log: {relative(log) if log else ', '.join(relative(path) for path in LOGS.values())}",
              file=sys.stderr)
        return 1
    except DemoFailed as exc:
        started_any = any(service.process for service in services)
        logs = ", ".join(relative(path) for path in LOGS.values())
        print(f"\n\ndemo FAILED: {exc}" + (f"\nservice logs: {logs}" if started_any else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n\ndemo interrupted; stopping the services (logs: "
              f"{', '.join(relative(path) for path in LOGS.values())})", file=sys.stderr)
        return 130
    finally:
        for service in services:
            service.stop()

    enrollment_report = EnrollmentReport(enrollment, enrollment_metrics, enrollment_outputs, scenario.day, api_url)
    report = Report(scenario, metrics, outputs, zone, suffix)
    dispatch_report = DispatchReport(event_plan, dispatch_outcome, in_effect)
    baseline_report = BaselineReport(baseline_plan, baseline_outcome)
    print(enrollment_report.render())
    print(report.render())
    print(dispatch_report.render())
    print(baseline_report.render())
    cycle_days = {account_id: facts["bill_cycle_day"] for account_id, facts in
                  {**enrollment.accounts, **summer.new_accounts}.items()}
    settlement_report = SettlementReport(summer, summer_outcome, ledger, programs, cycle_days,
                                         (baseline_plan.event_id, PROGRAM_ID), suffix)
    curves = event_curves(settlement_report, programs, {**sent_kwh(baseline_plan.history), **scenario.final_kwh})
    check_curves(settlement_report, curves)
    print(settlement_report.render())
    html = write_html(settlement_report, curves, HTML_REPORT, f"{len(summer.accounts)} service accounts, "
                      f"{len(ALL_PROVIDERS)} providers, {len(event_ids)} events; run {suffix}, Postgres schema {schema}")
    print(f"\nHTML report with charts: {relative(html)}")
    elapsed = time.monotonic() - started
    checks = [*enrollment_report.checks, *report.checks, *dispatch_report.checks, *baseline_report.checks,
              *settlement_report.checks]
    failures = [check.what for check in checks if not check.ok]
    print(f"\nservice logs: {', '.join(relative(path) for path in LOGS.values())} (this run's topics and "
          f"consumer groups end in {suffix}; its Postgres schema is {schema})")
    if failures:
        print(f"\ndemo FAILED after {elapsed:.0f} s: {len(failures)} check(s) did not hold:", file=sys.stderr)
        for failure in failures:
            print(f"  ✗ {failure}", file=sys.stderr)
        return 1
    print(f"demo OK in {elapsed:.0f} s: all {len(checks)} checks held")
    return 0


def sent_kwh(reads: list[Outgoing]) -> dict[tuple[str, datetime], Decimal]:
    """(meter, interval start) → kWh of plain reads sent."""
    return {(read.value["meter_id"], read.value["interval_start"]):
            read.value["value"] * WH_PER_UNIT[read.value["unit"]] / 1000 for read in reads}


def introduce(scenario: DayScenario, enrollment: EnrollmentScenario, baseline: BaselinePlan, summer: SummerPlan,
              settings: ServiceSettings, args: argparse.Namespace, zone: str, schema: str) -> None:
    accounts = scenario.accounts
    quarter = sum(1 for a in accounts if a.interval_seconds == 900)
    kwh = sum(1 for a in accounts if a.unit == "KWH")
    channels = {channel: sum(1 for case in enrollment.cases if case.channel == channel) for channel in (KAFKA, HTTP)}
    steps = enrollment.steps
    rows = [
        ["day", f"{scenario.day:%A %Y-%m-%d}, America/Los_Angeles ({len(scenario.hours)} hours, {zone})"],
        ["data", f"{relative(SAMPLE_YEAR_CSV)}: Green Button sample year, "
                 f"{len({a.profile for a in accounts})} household load profiles (Apache-2.0); the day carries the "
                 f"load of {sample_day(scenario.day):%A %Y-%m-%d}"],
        ["accounts", f"{len(accounts)} service accounts, profiles round-robin, each scaled ×0.8–1.3; "
                     f"{quarter} on 15-minute meters, {kwh} reporting kWh, the rest hourly Wh"],
        ["sign-ups", f"{len(enrollment.cases)} requests for {enrollment.program.id} from {' and '.join(PROVIDERS)}, "
                     f"{channels[KAFKA]} on Kafka and {channels[HTTP]} over HTTP, "
                     f"{steps[0].at.astimezone(LOCAL_ZONE):%m-%d} to {steps[-1].at.astimezone(LOCAL_ZONE):%m-%d}"],
        ["event", f"{baseline.event_id} on {PROGRAM_ID}, {baseline.start.astimezone(LOCAL_ZONE):%H:%M}–"
                  f"{baseline.end.astimezone(LOCAL_ZONE):%H:%M} as updated, for the {len(baseline.accounts)} accounts in "
                  f"effect; baselines from {HISTORY_DAYS} days of usage backfilled at midnight "
                  f"({len(baseline.history):,} reads)"],
        ["summer", f"then to {summer.days[-1].day}: {len(summer.new_accounts)} more accounts sign up for Save Power "
                   f"Days (EnergyHub, Google Nest) and ohm-hours (OhmConnect); {len(summer.events)} events on the "
                   f"hottest afternoons of the three programs open in 2025, thermostats that follow, override or are "
                   f"offline; late and corrected reads, a customer who leaves, malformed records; every bill period "
                   f"closed to {summer.close_until}; a settlement report, also as HTML with charts"],
        ["topics", f"private copies with suffix {settings.topic_suffix} "
                   f"(e.g. {METER_READS}{settings.topic_suffix})"],
        ["postgres", f"private schema {schema} (enrollment's projection and API tokens, dispatch's events, the "
                     "billing ledger)"],
        ["services", f"enrollment http://127.0.0.1:{args.enrollment_port} (API, /metrics), "
                     f"telemetry http://127.0.0.1:{args.web_port}/metrics, dispatch :{args.dispatch_port}/metrics, "
                     f"baseline :{args.baseline_port}/metrics, settlement http://127.0.0.1:{args.settlement_port} "
                     f"(API, /metrics); simulated clock; logs in {relative(LOG_DIR)}/demo-*.log"],
    ]
    print("gridflex demo: thermostats enroll in the Smart Energy Program, one summer day of meter reads and an event "
          "in detail, then the rest of the summer on three programs, settled in the billing ledger\n")
    for name, text in rows:
        print(f"  {name:<9} {text}")


async def prepare(settings: ServiceSettings, start: datetime, schema: str) -> None:
    """Delete what earlier runs left (their topics and schemas: this run's stay for inspection),
    create this run's, and start the clock at the first step."""
    try:
        await delete_topics_containing(settings.kafka_bootstrap, "-demo-")
        await isolated_topics(settings, providers=ALL_PROVIDERS)
        async with RecordProducer(settings) as producer:
            await (await producer.send(CLOCK, "clock", {"now": start}))
    except KafkaError as exc:
        raise DemoFailed(f"Kafka at {settings.kafka_bootstrap} did not answer ({exc!r}); is the stack up? "
                         "`make up` starts it") from None
    try:
        connection = await asyncpg.connect(settings.database_url)
        try:
            for (earlier,) in await connection.fetch(
                    r"SELECT nspname FROM pg_namespace WHERE nspname ~ '^demo_[0-9a-f]{6}$'"):
                await connection.execute(f'DROP SCHEMA "{earlier}" CASCADE')
            await connection.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await connection.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise DemoFailed(f"Postgres did not answer ({exc!r}); is the stack up? `make up` starts it") from None


def mint_tokens(database_url: str) -> dict[str, str]:
    """One API token per provider, minted the way an operator does: `gridflex partner credential`."""
    print(f"\nminting API tokens: gridflex partner credential {' / '.join(ALL_PROVIDERS)}, gridflex operator "
          "credential demo-operator … ", end="", flush=True)
    tokens = {provider: mint_credential(database_url, "partner", provider) for provider in ALL_PROVIDERS}
    print("done (only their SHA-256 is stored)")
    return tokens


def mint_credential(database_url: str, role: str, name: str) -> str:
    """`gridflex partner credential NAME` or `gridflex operator credential NAME`: the token it prints."""
    env = {**os.environ, "GRIDFLEX_DATABASE_URL": database_url}
    result = subprocess.run([sys.executable, "-m", "gridflex.cli", role, "credential", name],
                            env=env, capture_output=True, text=True, timeout=60)
    token = result.stdout.strip()
    if result.returncode != 0 or not token or len(token.split()) != 1:
        raise DemoFailed(f"`gridflex {role} credential {name}` failed ({result.returncode}):\n"
                         f"{result.stdout}{result.stderr}")
    return token


def mark_logs(suffix: str) -> None:
    """The services append to their logs; a line marks where this run begins."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for path in LOGS.values():
        with path.open("a") as log:
            log.write(f"# ---- gridflex demo run {suffix}, started "
                      f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} ----\n")


async def enrollment_weeks(settings: ServiceSettings, enroller: ServiceProcess, others: list[ServiceProcess],
                           api: ProviderApi, enrollment: EnrollmentScenario) -> tuple[EnrollmentMetrics, list]:
    async with api:
        return await run_enrollment(settings, enroller, others, api, enrollment)


async def enrollment_states(settings: ServiceSettings, enrollment: EnrollmentMetrics) -> list[dict]:
    """The enrollment states the service published in the weeks before: who is in effect on the day."""
    states = await collect(settings, ENROLLMENT_STATE, enrollment.records_out[ENROLLMENT_STATE])
    return [record.value for record in states if isinstance(record.value, dict)]


async def stream_day(settings: ServiceSettings, service: ServiceProcess, enroller: ServiceProcess,
                     scenario: DayScenario, zone: str, baseline: BaselineDay) -> TelemetryMetrics:
    """The backfill at midnight, the day hour by hour, and the read delivered the next morning;
    telemetry's metrics for the day alone (the backfill is the baseline phase's)."""
    async with RecordProducer(settings) as producer:
        await tick(producer, [service, enroller, baseline.service], scenario.hours[0].start)
        before = await baseline.backfill(producer)

        def day_only(text: str) -> TelemetryMetrics:
            return TelemetryMetrics.parse(text).since(before)

        await open_day(producer, service, scenario)

        print(f"\nstreaming {scenario.day} hour by hour (clock → each hour's end + 5 min, then its reads):\n")
        header = (f"  {'hour (' + zone + ')':<15}  {'reads':>5}  {'sent so far':>11}  {'intervals out':>13}  "
                  f"{'dropped':>7}  {'dead letters':>12}  {'device changes':>14}")
        print(header)
        print("  " + "─" * (len(header) - 2))
        sent, handled = 0, 0
        for index, hour in enumerate(scenario.hours):
            await tick(producer, [service], hour.tick)
            ended = await baseline.ticked(index)  # once the event has ended: every account evaluated
            await send_records(producer, [*hour.meter_reads, *hour.thermostat_states])
            sent += len(hour.meter_reads)
            metrics = await wait_for_reads(service, handled + len(hour.meter_reads), day_only)
            progress(hour, sent, handled, metrics)
            for line in [*ended, *await baseline.handled(index)]:
                print(f"  {'':<15}  {line}")
            handled = metrics.reads_handled
        if scenario.late_reads:
            await tick(producer, [service, baseline.service], scenario.late_delivery)
            print(f"\n{scenario.late_delivery.astimezone(LOCAL_ZONE):%H:%M} the next morning "
                  f"(clock → {scenario.late_delivery.astimezone(LOCAL_ZONE):%a %m-%d %H:%M}):")
            await send_records(producer, scenario.late_reads)
            sent += len(scenario.late_reads)
            await wait_for_reads(service, sent, day_only)
            for record in scenario.late_reads:
                print(f"  ↳ {record.kind:<16} {record.note}")
            for line in await baseline.handled(len(scenario.hours)):
                print(f"  {line}")

    # Everything sent is handled by now, unless the service fell behind or dropped something.
    await wait_for_reads(service, sent, day_only)
    expected_changes = len(scenario.expected_device_changes())
    metrics = await wait_until(service, day_only,
                               lambda m: sum(m.device_changes.values()) >= expected_changes and m.settled, QUIET_S)
    return metrics or await scrape(service, day_only)


async def read_back(settings: ServiceSettings, metrics: TelemetryMetrics, enroller: ServiceProcess,
                    answers: list, scenario: DayScenario, backfilled: int
                    ) -> tuple[Outputs, EnrollmentMetrics, EnrollmentOutputs]:
    """Both services' output topics, read from the beginning (the dead-letter topic is shared);
    of the intervals, the day's (the ``backfilled`` ones before it are the baseline phase's)."""
    print("\nreading back the services' output topics …")
    enrollment = await wait_until(enroller, EnrollmentMetrics.parse, lambda m: m.settled, QUIET_S)
    enrollment = enrollment or await scrape(enroller, EnrollmentMetrics.parse)
    decision_topics = [ENROLLMENT_DECISIONS.format(provider_id=provider) for provider in PROVIDERS]
    intervals, letters, statuses, states, incentives, *decisions = await asyncio.gather(
        collect(settings, METER_INTERVALS, backfilled + metrics.intervals_out),
        collect(settings, DEAD_LETTERS, metrics.dead_letters_out + enrollment.records_out[DEAD_LETTERS]),
        collect(settings, DEVICE_STATUS, metrics.device_statuses_out),
        collect(settings, ENROLLMENT_STATE, enrollment.records_out[ENROLLMENT_STATE]),
        collect(settings, INCENTIVES, enrollment.records_out[INCENTIVES]),
        *(collect(settings, topic, enrollment.records_out[topic]) for topic in decision_topics),
    )
    (intervals, bad_intervals), (letters, bad_letters), (statuses, bad_statuses) = (
        decoded(intervals), decoded(letters), decoded(statuses))
    intervals = [interval for interval in intervals if interval["interval_start"] >= scenario.hours[0].start]
    (states, bad_states), (incentives, bad_incentives) = decoded(states), decoded(incentives)
    decided = [decoded(records) for records in decisions]
    letters = distinct(letters, ("source_topic", "source_partition", "source_offset"))
    outputs = Outputs(
        intervals=intervals,
        dead_letters=[letter for letter in letters if letter["service"] == "telemetry"],
        device_statuses=distinct(statuses, ("provider_id", "thermostat_serial", "observed_at", "change")),
        undecodable=bad_intervals + bad_letters + bad_statuses,
    )
    enrollment_outputs = EnrollmentOutputs(
        decisions=[decision for values, _ in decided for decision in values],
        states=states,
        incentives=distinct(incentives, ("claim_id", "outcome")),
        dead_letters=[letter for letter in letters if letter["service"] == "enrollment"],
        answers=answers,
        undecodable=bad_states + bad_incentives + sum(bad for _, bad in decided),
    )
    return outputs, enrollment, enrollment_outputs


async def open_day(producer: RecordProducer, service: ServiceProcess, scenario: DayScenario) -> None:
    """Send the thermostats' midnight states and wait until the service reports them.

    The service subscribes to the providers' topics by pattern; once the first device changes
    come out, it is subscribed and settled.
    """
    await send_records(producer, scenario.opening_states)
    expected = sum(len(record.changes) for record in scenario.opening_states)
    print(f"\nwaiting for telemetry to report the thermostats of {', '.join(PROVIDERS)} … ", end="", flush=True)
    waited = time.monotonic()
    metrics = await wait_until(service, TelemetryMetrics.parse,
                               lambda m: sum(m.device_changes.values()) >= expected, DEVICE_TIMEOUT_S)
    if metrics is None:
        raise DemoFailed(f"no device status change came out within {DEVICE_TIMEOUT_S:.0f} s of the thermostats' "
                         "midnight states: the service did not subscribe to the partner topics")
    await asyncio.to_thread(service.wait_ready, HOUR_TIMEOUT_S)  # /health 200: not rebalancing
    print(f"{time.monotonic() - waited:.1f} s ({len(scenario.opening_states)} thermostats first seen)")


async def wait_for_reads(service: ServiceProcess, count: int,
                         parse: Callable[[str], TelemetryMetrics] = TelemetryMetrics.parse) -> TelemetryMetrics:
    """The metrics once the service has handled ``count`` reads in all, or has gone quiet short of it."""
    return await wait_for_progress(service, parse,
                                   lambda m: m.reads_handled >= count and m.settled, HOUR_TIMEOUT_S, QUIET_S)


def progress(hour: SimulatedHour, sent: int, handled_before: int, m: TelemetryMetrics) -> None:
    print(f"  {hour.label:<15}  {len(hour.meter_reads):>5}  {sent:>11,}  {m.intervals_out:>13,}  {m.dropped:>7}  "
          f"{m.meter_dead_letters:>12}  {sum(m.device_changes.values()):>14}")
    for record in hour.notes:
        print(f"  {'':<15}  ↳ {record.kind:<16} {record.note}")
    if m.reads_handled - handled_before < len(hour.meter_reads):
        print(f"  {'':<15}  ⚠ the service went quiet having handled {m.reads_handled - handled_before} "
              f"of this hour's {len(hour.meter_reads)} reads")


if __name__ == "__main__":
    sys.exit(main())
