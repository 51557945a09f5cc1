"""Enrollment decisions per second: 200,000 requests against 200,000 published accounts, one worker.

The issue: "Benchmark (added to `make bench`): decisions per second for 200,000 enrollment
requests against 200,000 accounts; target ≥ 5,000 decisions/s on one worker. Report the figure."

How (all topics private to the run, named with a ``-bench-<hex>`` suffix, deleted at the end; the
Postgres projection in a schema of its own, dropped at the end):

1. pre-load the accounts on ``utility.customer-accounts.v1`` and one ENROLL request per account
   on ``partner.{energyhub,resideo}.enrollment-requests.v1`` (:mod:`bench.enrollment_requests`,
   ``BENCH_ENROLLMENT_RECORDS``, default 200,000), then one clock tick at or after every request:
   the service runs on the simulated clock;
2. one ``gridflex run enrollment`` worker process reads them; the decision topics' end offsets
   are polled every 0.25 s until they hold one decision per request. The *decision* rate, held
   against the target, runs from the first decision seen to the last, less the 10 s in which
   py-spy samples the worker (:mod:`bench.profiling`); the rate over the whole run, while
   profiled, and from the worker's ``/health`` readiness are reported too. The same worker then
   decides the bonus claims and writes the Postgres projection: the run waits for both.
   ``/proc`` gives the worker's CPU time and peak memory; the raw stacks stay in
   ``bench/results/enrollment-py-spy-raw.txt``;
3. correctness: every decision read back and held against the one the service's own rules give
   (:mod:`services.enrollment.domain.eligibility`), exactly one per request, no dead letters, one
   incentive decision per accepted request (granted while the bonus fund lasts, then denied
   BONUS_FUND_EXHAUSTED; utility-program thermostats denied), one projection row per decision.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass

import asyncpg

from bench import RESULTS_DIR
from bench.console import progress, rate
from bench.enrollment_requests import PROVIDERS, EnrollmentLoad
from bench.ingest import ServiceRun, check_alive, ready_after, start_when_ready
from bench.procstats import MachineCpu, cpu_seconds, peak_rss_mib
from bench.profiling import Sampler, py_spy_executable, service_areas, where_the_time_goes
from bench.topics import RecordCounter, isolated_run, preload_records, publish_clock_tick, read_all
from gridflex import REPO_ROOT
from gridflex.processes import ServiceProcess, free_port, isolated_env
from gridflex.settings import ServiceSettings
from gridflex.topics import DEAD_LETTERS, ENROLLMENT_DECISIONS, INCENTIVES, TopicSpec

DEFAULT_RECORDS = 200_000
TARGET_DECISIONS_PER_S = 5_000
PRELOAD_PROGRESS_EVERY = 50_000
POLL_INTERVAL_S = 0.25
SERVICE_PROGRESS_EVERY_S = 5.0
STALL_TIMEOUT_S = 60.0
PROFILE_SECONDS = 10
SERVICE_LOG = REPO_ROOT / "var" / "log" / "bench-enrollment.log"
PROFILE_STACKS = RESULTS_DIR / "enrollment-py-spy-raw.txt"
DECISION_TOPICS = [ENROLLMENT_DECISIONS.format(provider_id=provider) for provider in PROVIDERS]
FUND_EXHAUSTED = "BONUS_FUND_EXHAUSTED"
# What the worker's CPU time is for: the frame nearest the leaf that names an area decides.
PROFILE_AREAS = service_areas("enrollment", [
    ("state: account books and participation as JSON, the store (rocksdict, changelog)",
     ("AccountBook.to_state ", "AccountBook.from_state ", "Participation.", "_account_from_json ",
      "_request_from_json ", "_date_or_none ", "gridflex/state.py")),
    ("enrollment rules: eligibility, decisions, incentives (services/enrollment/domain, calendar, programs)",
     ("services/enrollment/domain/", "gridflex/calendar.py", "gridflex/programs.py")),
    ("Postgres projection (projection rows, asyncpg)", ("services/enrollment/projection.py", "asyncpg/")),
])


def run() -> dict:
    records = int(os.environ.get("BENCH_ENROLLMENT_RECORDS", DEFAULT_RECORDS))
    return asyncio.run(benchmark(records))


async def benchmark(records: int) -> dict:
    load_average = os.getloadavg()
    py_spy = py_spy_executable()
    async with isolated_run("enrollment", tuple(PROVIDERS)) as run:
        settings, topics, database_url = run.settings, run.topics, run.database_url
        progress(f"enrollment: {records:,} accounts and requests, topics suffixed {settings.topic_suffix}, Postgres schema {run.schema}; "
                 f"load average {load_average[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine skews the figures)")
        started = time.perf_counter()
        load = EnrollmentLoad(records)
        progress(f"enrollment: load generated in {time.perf_counter() - started:.1f} s; expected {load.accepted:,} "
                 f"accepted, {records - load.accepted:,} rejected, {load.bonus_claims:,} bonus claims for "
                 f"{load.bonuses_funded:,} funded bonuses")
        preload = await preload_requests(settings, load, topics)
        await tick_after_the_requests(settings, load)
        service = await measure_service(settings, topics, load, database_url, py_spy)
        outputs = await read_outputs(settings, topics, load)
    print("\nwhere the time goes (enrollment worker):\n" + where_the_time_goes(service.profile) + "\n", flush=True)
    return report(load, load_average, preload, service, outputs)


# -- input ---------------------------------------------------------------------------------------


async def preload_requests(settings: ServiceSettings, load: EnrollmentLoad, topics: dict[str, TopicSpec]) -> dict:
    """Produce every account, then every request, before anything is timed."""
    total = 2 * load.records
    progress(f"enrollment: pre-loading {load.records:,} accounts, then {load.records:,} requests")
    seconds = await preload_records(settings, load.topic_records(), PRELOAD_PROGRESS_EVERY, total=total)
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        accounts = await counter.count(topics["utility.customer-accounts.v1"])
        requests = {provider: await counter.count(topics[f"partner.{provider}.enrollment-requests.v1"])
                    for provider in PROVIDERS}
    if accounts != load.records or sum(requests.values()) != load.records:
        raise RuntimeError(f"pre-load: {accounts:,} accounts and {requests} requests on the topics, "
                           f"expected {load.records:,} of each")
    progress(f"enrollment: pre-loaded {total:,} records in {seconds:.1f} s ({rate(total, seconds)}); requests "
             + ", ".join(f"{provider} {count:,}" for provider, count in requests.items()))
    return {"records": total, "requests_by_provider": requests, "seconds": round(seconds, 2),
            "records_per_s": round(total / seconds)}


async def tick_after_the_requests(settings: ServiceSettings, load: EnrollmentLoad) -> None:
    """The service waits for simulated time; "now" is at or after every request (later ones are dead-lettered)."""
    await publish_clock_tick(settings, load.clock_now)
    progress(f"enrollment: clock tick {load.clock_now.isoformat()}")


# -- the projection ------------------------------------------------------------------------------


async def projection_rows(connection: asyncpg.Connection) -> int:
    """Decisions in the projection (the worker creates the table on first use)."""
    try:
        return await connection.fetchval("SELECT count(*) FROM enrollment_decisions")
    except asyncpg.UndefinedTableError:
        return 0


# -- the service under test ----------------------------------------------------------------------


@dataclass
class EnrollmentRun(ServiceRun):
    """A telemetry-style :class:`ServiceRun` (its timeline counts decisions), and what follows the decisions:
    the bonus claims decided and the projection written, by the same worker."""

    incentives_done: float | None = None
    projection_done: float | None = None
    cpu_at_settled: float = 0.0
    incentives_out: int = 0
    projection_rows: int = 0


async def measure_service(settings: ServiceSettings, topics: dict[str, TopicSpec], load: EnrollmentLoad,
                          database_url: str, py_spy: str | None) -> EnrollmentRun:
    SERVICE_LOG.unlink(missing_ok=True)
    service = ServiceProcess(
        "enrollment", isolated_env(settings.topic_suffix, GRIDFLEX_DATABASE_URL=database_url),
        web_port=free_port(), log_path=SERVICE_LOG,
    )
    progress(f"enrollment: starting the enrollment worker (log: {SERVICE_LOG})")
    observed = EnrollmentRun(spawned=time.monotonic())
    machine_before = MachineCpu.read()
    starting = asyncio.create_task(asyncio.to_thread(start_when_ready, service))
    decisions = [topics[topic] for topic in DECISION_TOPICS]
    try:
        async with RecordCounter(settings.kafka_bootstrap) as counter:
            async def decisions_out() -> int:
                return sum([await counter.count(topic) for topic in decisions])

            sampler = await watch_decisions(service, starting, decisions_out, load.records, observed, py_spy)
            observed.machine_busy_share = MachineCpu.read().busy_share_since(machine_before)
            if sampler is None:
                observed.profile = {"note": "no profile: py-spy is not available"}
            else:
                observed.profile = await sampler.stop()
                observed.profile_window = tuple(moment - observed.spawned for moment in sampler.window)
            observed.ready = await ready_after(starting, observed.spawned)
            observed.cpu_at_done = cpu_seconds(service.process.pid)
            if observed.complete:
                await watch_what_follows(service, counter, topics[INCENTIVES], database_url, load, observed)
            observed.cpu_at_settled = cpu_seconds(service.process.pid)
            observed.peak_rss_mib = peak_rss_mib(service.process.pid)
            await asyncio.to_thread(service.stop)  # flushes: count what it wrote after it stopped
            observed.records_out = await decisions_out()
            observed.incentives_out = await counter.count(topics[INCENTIVES])
            observed.dead_letters = await counter.count(topics[DEAD_LETTERS])
        connection = await asyncpg.connect(database_url)
        try:
            observed.projection_rows = await projection_rows(connection)
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(service.stop)  # nothing left to do unless something above failed
    progress(f"enrollment: worker stopped; {observed.records_out:,} decisions, {observed.incentives_out:,} incentive "
             f"decisions, {observed.projection_rows:,} projection rows, {observed.dead_letters:,} dead letters")
    return observed


async def watch_decisions(service: ServiceProcess, starting: asyncio.Task, decisions_out, records: int,
                          observed: EnrollmentRun, py_spy: str | None) -> Sampler | None:
    """Poll the decision topics until they hold ``records``; start the profiler (if any) at the first decision."""
    sampler, reported_ready, last_change, last_report = None, False, 0.0, 0.0
    while True:
        check_alive(service)
        if starting.done() and not reported_ready:
            ready = await ready_after(starting, observed.spawned)  # raises if the worker failed other than by not being ready
            progress(f"  worker ready (/health) after {ready:.1f} s" if ready is not None else
                     "  worker not ready (/health) in time, yet running: measuring on (the run will not be ok)")
            reported_ready = True
        count, now = await decisions_out(), observed.now()
        if count != observed.count_at(now):
            last_change = now
        observed.timeline.append((round(now, 3), count))
        if count and observed.first_output is None:
            observed.first_output = now
            observed.cpu_at_first_output = cpu_seconds(service.process.pid)
            last_report = now
            progress(f"  first decisions out after {now:.1f} s" + (f"; profiling for {PROFILE_SECONDS} s" if py_spy else ""))
            if py_spy:
                sampler = Sampler(py_spy, service.process.pid, PROFILE_SECONDS, PROFILE_STACKS, PROFILE_AREAS)
                await sampler.start()
        if count >= records:
            observed.done = now
            progress(f"  all {count:,} decisions out after {now:.1f} s")
            return sampler
        if now - last_change > STALL_TIMEOUT_S and (observed.first_output is not None or starting.done()):
            progress(f"  no progress for {STALL_TIMEOUT_S:.0f} s at {count:,} / {records:,} decisions: giving up")
            return sampler
        if observed.first_output is not None and now - last_report >= SERVICE_PROGRESS_EVERY_S:
            progress(f"  {count:,} / {records:,} decisions out ({rate(count, now - observed.first_output)} so far)")
            last_report = now
        await asyncio.sleep(POLL_INTERVAL_S)


async def watch_what_follows(service: ServiceProcess, counter: RecordCounter, incentives: TopicSpec,
                             database_url: str, load: EnrollmentLoad, observed: EnrollmentRun) -> None:
    """After the decisions: until every accepted request has its incentive decision and every decision its
    projection row (or neither moves for the stall timeout)."""
    connection = await asyncpg.connect(database_url)
    try:
        last, last_change, last_report = (-1, -1), observed.now(), observed.now()
        while True:
            check_alive(service)
            now = observed.now()
            incentives_out, rows = await counter.count(incentives), await projection_rows(connection)
            if observed.incentives_done is None and incentives_out >= load.accepted:
                observed.incentives_done = now
            if observed.projection_done is None and rows >= load.records:
                observed.projection_done = now
            if observed.incentives_done is not None and observed.projection_done is not None:
                progress(f"  incentives and projection complete after {now:.1f} s")
                return
            if (incentives_out, rows) != last:
                last, last_change = (incentives_out, rows), now
            if now - last_change > STALL_TIMEOUT_S:
                progress(f"  no progress for {STALL_TIMEOUT_S:.0f} s at {incentives_out:,} / {load.accepted:,} "
                         f"incentive decisions, {rows:,} / {load.records:,} projection rows: giving up")
                return
            if now - last_report >= SERVICE_PROGRESS_EVERY_S:
                progress(f"  {incentives_out:,} / {load.accepted:,} incentive decisions, "
                         f"{rows:,} / {load.records:,} projection rows")
                last_report = now
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        await connection.close()


# -- correctness: the outputs read back ----------------------------------------------------------


async def read_outputs(settings: ServiceSettings, topics: dict[str, TopicSpec], load: EnrollmentLoad) -> dict:
    """Every decision held against the expected one; the incentive decisions and dead letters by outcome."""
    progress("enrollment: reading the decisions, incentive decisions and dead letters back")
    started = time.perf_counter()
    outcomes, providers, decided = Counter(), Counter(), Counter()
    wrong: list[str] = []
    async with RecordCounter(settings.kafka_bootstrap) as counter:
        ends = {topic: await counter.count(topics[topic]) for topic in [*DECISION_TOPICS, INCENTIVES, DEAD_LETTERS]}
    for topic in DECISION_TOPICS:
        async for record in read_all(settings, topic, ends[topic]):
            decision = record.value
            decided[decision["request_id"]] += 1
            outcomes[decision["outcome"]] += 1
            providers[decision["provider_id"]] += 1
            expected = load.expected.get(decision["request_id"])
            if (expected is None or expected.provider_id != decision["provider_id"]
                    or expected.accepted != (decision["outcome"] == "ACCEPTED")):
                wrong.append(f"{decision['provider_id']}/{decision['request_id']} {decision['outcome']} "
                             f"{[failure['code'] for failure in decision['failures']]}")
    incentives = Counter()
    async for record in read_all(settings, INCENTIVES, ends[INCENTIVES]):
        codes = [failure["code"] for failure in record.value["failures"]]
        incentives[f"{record.value['outcome']} {codes[0]}" if codes else record.value["outcome"]] += 1
    dead_letters = Counter()
    async for record in read_all(settings, DEAD_LETTERS, ends[DEAD_LETTERS]):
        dead_letters[f"{record.value['source_topic']} {record.value['reason_code']}"] += 1
    for example in wrong[:5]:
        progress(f"  not the expected decision: {example}")
    for reason, count in dead_letters.most_common(5):
        progress(f"  dead letters: {count:,} x {reason}")
    progress(f"enrollment: read back in {time.perf_counter() - started:.1f} s: {dict(outcomes)}; incentives "
             f"{dict(incentives)}")
    return {
        "outcomes": dict(outcomes),
        "by_provider": dict(providers),
        "requests_decided": len(decided),
        "requests_decided_twice_or_more": sum(1 for count in decided.values() if count > 1),
        "requests_undecided": len(set(load.expected) - set(decided)),
        "unexpected_decisions": len(wrong),
        "unexpected_examples": wrong[:20],
        "incentives": dict(incentives),
        "dead_letters": dict(dead_letters),
    }


# -- the report ----------------------------------------------------------------------------------


def report(load: EnrollmentLoad, load_average: tuple[float, float, float], preload: dict, service: EnrollmentRun,
           outputs: dict) -> dict:
    granted = min(load.bonus_claims, load.bonuses_funded)
    expected = {
        "decisions": load.records,
        "accepted": load.accepted,
        "rejected": load.records - load.accepted,
        "incentive_decisions": load.accepted,
        "bonuses_granted": granted,
        "bonuses_denied_fund_exhausted": load.bonus_claims - granted,
        "bonuses_denied_other": load.accepted - load.bonus_claims,
    }
    incentives = outputs["incentives"]
    observed = {
        "decisions": service.records_out,
        "accepted": outputs["outcomes"].get("ACCEPTED", 0),
        "rejected": outputs["outcomes"].get("REJECTED", 0),
        "incentive_decisions": service.incentives_out,
        "bonuses_granted": incentives.get("GRANTED", 0),
        "bonuses_denied_fund_exhausted": incentives.get(f"DENIED {FUND_EXHAUSTED}", 0),
        "bonuses_denied_other": sum(count for outcome, count in incentives.items()
                                    if outcome.startswith("DENIED") and outcome != f"DENIED {FUND_EXHAUSTED}"),
    }
    checks = {
        **{name: observed[name] == expected[name] for name in expected},
        "every request decided once": (outputs["requests_decided"] == load.records
                                       and outputs["requests_decided_twice_or_more"] == 0),
        "every decision as expected": outputs["unexpected_decisions"] == 0,
        "no dead letters": service.dead_letters == 0,
        "worker ready (/health)": service.ready is not None,
        "projection rows": service.projection_rows == load.records,
    }
    result = {
        "benchmark": "enrollment",
        "ok": service.complete and all(checks.values()),
        "records": load.records,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_average},
        "preload": preload,
        "service": service_figures(load.records, service),
        "expected": expected,
        "observed": observed,
        "checks": checks,
        "outputs": outputs,
        "profile": service.profile,
    }
    if service.complete:
        result["targets"] = {
            f"decisions >= {TARGET_DECISIONS_PER_S} /s": service.ingestion_rate() >= TARGET_DECISIONS_PER_S,
        }
    result["table"] = table_rows(result)
    return result


def service_figures(records: int, service: EnrollmentRun) -> dict:
    figures = {
        "complete": service.complete,
        "decisions_out": service.records_out,
        "incentive_decisions_out": service.incentives_out,
        "projection_rows": service.projection_rows,
        "dead_letters": service.dead_letters,
        "ready_after_s": round(service.ready, 2) if service.ready is not None else None,
        "first_decision_after_s": round(service.first_output, 2) if service.first_output is not None else None,
        "last_decision_after_s": round(service.done, 2) if service.done is not None else None,
        "incentives_done_after_s": round(service.incentives_done, 2) if service.incentives_done else None,
        "projection_done_after_s": round(service.projection_done, 2) if service.projection_done else None,
        "peak_rss_mib": round(service.peak_rss_mib, 1),
        "cpu_s_at_last_decision": round(service.cpu_at_done, 2),
        "cpu_s_total": round(service.cpu_at_settled, 2),
        "machine_cpu_busy_share": round(service.machine_busy_share, 3),
        "profile_window_s": service.profile_window,
        "timeline": service.timeline,
    }
    if service.complete:
        steady_seconds = service.done - service.first_output
        cpu_deciding = service.cpu_at_done - service.cpu_at_first_output
        unprofiled = service.unprofiled_rate()
        figures |= {
            "decisions_per_s": round(service.ingestion_rate()),
            "steady_decisions_per_s": round(service.steady_rate()),
            "steady_unprofiled_decisions_per_s": round(unprofiled) if unprofiled else None,
            "decisions_per_s_from_ready": round(records / (service.done - service.ready)) if service.ready else None,
            # Accounts and requests: how much account work overlaps the decisions depends on the fetch order.
            "inputs_per_s_from_ready": round(2 * records / (service.done - service.ready)) if service.ready else None,
            "steady_seconds": round(steady_seconds, 2),
            "cpu_s_deciding": round(cpu_deciding, 2),
            "cpu_utilisation_deciding": round(cpu_deciding / steady_seconds, 3),
            "cpu_us_per_decision": round(cpu_deciding / (records - service.count_at(service.first_output)) * 1e6, 1),
            "cpu_us_per_decision_all_work": round(service.cpu_at_settled / records * 1e6, 1),
        }
        if service.profile_window:
            figures["decisions_per_s_while_profiled"] = round(service.rate(*service.profile_window))
    return figures


def table_rows(result: dict) -> list[list[str]]:
    service, expected, observed, cpus = result["service"], result["expected"], result["observed"], result["machine"]["cpus"]
    outputs = result["outputs"]

    def status(met: bool) -> str:
        return "met" if met else "NOT MET"

    def seconds(value: float | None, never: str = "never") -> str:
        return f"{value} s" if value is not None else never

    def check(name: str, label: str) -> list[str]:
        return [label, f"{observed[name]:,}", f"= {expected[name]:,}", "ok" if observed[name] == expected[name] else "WRONG"]

    rows = [
        ["accounts / requests", f"{result['records']:,} / {result['records']:,}", "", ""],
        ["pre-load (not timed)", f"{result['preload']['records_per_s']:,} rec/s", "", ""],
    ]
    if service["complete"]:
        decisions = service["decisions_per_s"]
        rows += [
            ["decisions (unprofiled, first to last)", f"{decisions:,} /s", f">= {TARGET_DECISIONS_PER_S:,} /s",
             status(decisions >= TARGET_DECISIONS_PER_S)],
            ["decisions, whole steady run", f"{service['steady_decisions_per_s']:,} /s", "", ""],
            ["decisions, while profiled", f"{service['decisions_per_s_while_profiled']:,} /s"
             if "decisions_per_s_while_profiled" in service else "not profiled", "", ""],
            ["decisions, from /health ready", f"{service['decisions_per_s_from_ready']:,} /s"
             if service["ready_after_s"] is not None else "never ready", "", ""],
            ["accounts + requests in, from /health ready", f"{service['inputs_per_s_from_ready']:,} /s"
             if service["ready_after_s"] is not None else "never ready", "", ""],
            ["deciding duration", f"{service['steady_seconds']:.1f} s", "", ""],
            ["worker CPU while deciding",
             f"{service['cpu_s_deciding']:.1f} s ({service['cpu_utilisation_deciding']:.0%} of a core)", "", ""],
            ["worker CPU per decision, while deciding", f"{service['cpu_us_per_decision']} µs", "", ""],
            ["worker CPU per decision, all work (start, accounts, incentives, projection)",
             f"{service['cpu_us_per_decision_all_work']} µs ({service['cpu_s_total']:.1f} s)", "", ""],
        ]
    else:
        rows.append(["decisions", "did not finish", f">= {TARGET_DECISIONS_PER_S:,} /s", "NOT MET"])
    rows += [
        ["worker ready / first / last decision",
         f"{seconds(service['ready_after_s'], 'never ready')} / {seconds(service['first_decision_after_s'])} / "
         f"{seconds(service['last_decision_after_s'])}", "", "" if service["ready_after_s"] is not None else "WRONG"],
        ["incentives / projection complete",
         f"{seconds(service['incentives_done_after_s'])} / {seconds(service['projection_done_after_s'])}", "", ""],
        ["worker peak RSS", f"{service['peak_rss_mib']:.0f} MiB", "", ""],
        ["machine CPU busy, deciding", f"{service['machine_cpu_busy_share']:.0%} of {cpus} CPUs", "", ""],
        check("decisions", "decisions out"),
        check("accepted", "accepted"),
        check("rejected", "rejected"),
        ["decisions not as expected", f"{outputs['unexpected_decisions']:,}", "0",
         "ok" if outputs["unexpected_decisions"] == 0 else "WRONG"],
        ["requests decided twice / never", f"{outputs['requests_decided_twice_or_more']:,} / "
         f"{outputs['requests_undecided']:,}", "0 / 0",
         "ok" if outputs["requests_decided_twice_or_more"] == outputs["requests_undecided"] == 0 else "WRONG"],
        ["dead letters", f"{service['dead_letters']:,}", "0", "ok" if service["dead_letters"] == 0 else "WRONG"],
        check("incentive_decisions", "incentive decisions"),
        check("bonuses_granted", "bonuses granted"),
        check("bonuses_denied_fund_exhausted", f"bonuses denied {FUND_EXHAUSTED}"),
        check("bonuses_denied_other", "bonuses denied (utility-program thermostat)"),
        ["projection rows (Postgres)", f"{service['projection_rows']:,}", f"= {result['records']:,}",
         "ok" if service["projection_rows"] == result["records"] else "WRONG"],
    ]
    return rows
