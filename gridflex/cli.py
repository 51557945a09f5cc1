"""The ``gridflex`` operator command: the local stack, topics, providers, services, dead letters, the clock."""

from __future__ import annotations

import asyncio
import importlib
import sys
from datetime import datetime, timezone

import click
import structlog

from gridflex import stack as local_stack
from gridflex.command_params import Instant, ProviderId
from gridflex.settings import ServiceSettings
from gridflex.meter_import import import_group
from gridflex.topics import CLOCK, TopicCatalogue, create_topics
from services.vtn.clients import vtn_group

SERVICES = ("telemetry", "enrollment", "dispatch", "baseline", "settlement", "vtn")


def _settings() -> ServiceSettings:
    return ServiceSettings()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate gridflex: demand-response programs on Kafka."""
    # A command's output (a token, topic names) is stdout; what the code it calls logs (e.g.
    # "migration applied") goes to stderr, so `TOKEN=$(gridflex partner credential acme)` works.
    # `gridflex run` configures the services' own logging over this.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


# -- local stack ---------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local Kafka and PostgreSQL (no Docker), on 127.0.0.1."""


@stack.command("up")
def stack_up() -> None:
    """Install what is missing, start Kafka and PostgreSQL, create the catalogue's topics."""
    local_stack.up()
    created = asyncio.run(_create_catalogue_topics(_settings()))
    click.echo(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ", all present"))


@stack.command("down")
def stack_down() -> None:
    """Stop exactly what `stack up` started."""
    local_stack.down()


@stack.command("status")
def stack_status() -> None:
    """What runs, where, which versions."""
    local_stack.print_status()


@main.command("status")
def status() -> None:
    """The local stack (Kafka, PostgreSQL) and every service: ready, starting (restoring or
    rebalancing) or down; records behind; time since a partition with records waiting was last
    committed; local state restored; dead letters sent."""
    from gridflex.service_status import format_services, probe

    local_stack.print_status()
    click.echo()
    click.echo(format_services([probe(service) for service in SERVICES]))


# -- topics and providers ------------------------------------------------------------------------


@main.group()
def topics() -> None:
    """The topic catalogue (schemas/topics.yaml)."""


@topics.command("create")
def topics_create() -> None:
    """Create every catalogue topic that does not exist yet (idempotent)."""
    created = asyncio.run(_create_catalogue_topics(_settings()))
    click.echo("\n".join(created) if created else "all catalogue topics exist")


@topics.command("list")
def topics_list() -> None:
    """Print the catalogue."""
    catalogue = TopicCatalogue.load(_settings().schemas_dir)
    for spec in [*catalogue.topics.values(), *catalogue.partner_templates.values()]:
        click.echo(f"{spec.name:48} key={spec.key:28} value={spec.value:40} partitions={spec.partitions} "
                   f"{spec.cleanup_policy}")


async def _create_catalogue_topics(settings: ServiceSettings) -> list[str]:
    catalogue = TopicCatalogue.load(settings.schemas_dir)
    return await create_topics(settings.kafka_bootstrap, list(catalogue.topics.values()))


@main.group()
def partner() -> None:
    """Provider fleets (EnergyHub, Resideo, Nest, …)."""


@partner.command("add")
@click.argument("provider_id", type=ProviderId())
def partner_add(provider_id: str) -> None:
    """Onboard a provider: create its partner.<provider_id>.* topics."""
    settings = _settings()
    specs = TopicCatalogue.load(settings.schemas_dir).partner_topics(provider_id)
    created = asyncio.run(create_topics(settings.kafka_bootstrap, specs))
    for spec in specs:
        click.echo(f"{spec.name}: {'created' if spec.name in created else 'exists'}")


@partner.command("credential")
@click.argument("provider_id", type=ProviderId())
@click.option("--revoke", is_flag=True, help="Revoke every token of PROVIDER_ID instead of minting one.")
def partner_credential(provider_id: str, revoke: bool) -> None:
    """Mint an API token for PROVIDER_ID, printed once (only its SHA-256 is stored), or --revoke all its tokens."""
    _credential(provider_id, "provider", revoke)


def _credential(owner: str, role: str, revoke: bool) -> None:
    """Mint a token for ``owner`` (printed once) or revoke all of its tokens."""
    from gridflex.db import Database

    async def apply() -> str:
        database = Database(_settings().database_url)
        try:
            if revoke:
                return f"{owner}: {await database.revoke_credentials(owner, role)} token(s) revoked"
            return await database.mint_credential(owner, role)
        finally:
            await database.close()

    click.echo(asyncio.run(apply()))
    if not revoke:
        click.echo("Store this token now: only its SHA-256 is kept, it cannot be shown again.", err=True)


@main.group()
def operator() -> None:
    """Operators: people and systems (billing) that read every account through the APIs."""


@operator.command("credential")
@click.argument("operator_id")
@click.option("--revoke", is_flag=True, help="Revoke every token of OPERATOR_ID instead of minting one.")
def operator_credential(operator_id: str, revoke: bool) -> None:
    """Mint an API token for OPERATOR_ID (e.g. billing), printed once, or --revoke all its tokens."""
    _credential(operator_id, "operator", revoke)


@main.group()
def db() -> None:
    """The PostgreSQL schema (migrations/*.sql)."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply the migrations not applied yet (idempotent; safe while services run)."""
    from gridflex.db import migrate_now

    applied = migrate_now(_settings().database_url)
    click.echo("\n".join(f"applied {version}" for version in applied) if applied else "migrations: all applied")


# -- incentives ----------------------------------------------------------------------------------


@main.group()
def incentives() -> None:
    """Sign-up bonuses and rebates (gridflex.enrollment.incentives.v1)."""


@incentives.command("reverse")
@click.argument("claim_id")
@click.option("--reason", required=True, help="Why it was paid in error (kept on the reversal decision).")
@click.option("--on", "day", type=click.DateTime(["%Y-%m-%d"]), help="Day of the finding [default: today, Pacific].")
@click.option("--wait", "wait_s", default=30.0, show_default=True, help="Seconds to wait for the ledger's answer.")
def incentives_reverse(claim_id: str, reason: str, day: datetime | None, wait_s: float) -> None:
    """Reverse a bonus or rebate paid in error (CLAIM_ID as on its incentive decision), within the
    program's reversal window after posting."""
    from gridflex.calendar import local_date
    from services.enrollment.operations import ReversalRefused, reverse_incentive

    on = day.date() if day else local_date(datetime.now(timezone.utc))
    try:
        reversed_ = asyncio.run(reverse_incentive(_settings(), claim_id, reason, on, wait_s))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CLAIM_ID") from None
    except ReversalRefused as exc:
        click.echo(f"not reversed: {exc}", err=True)
        sys.exit(1)
    if reversed_ is None:
        click.echo(f"sent; no answer from the ledger within {wait_s:g} s (is the enrollment service running?)", err=True)
        sys.exit(2)
    remaining = f"; the fund has {reversed_.fund_remaining} left" if reversed_.fund_remaining is not None else ""
    click.echo(f"reversed {reversed_.claim_id}: {reversed_.amount} back{remaining}")


# -- events --------------------------------------------------------------------------------------


@main.group()
def events() -> None:
    """Energy events (dispatch): publish, update or cancel one; program hours; an event's life and
    acknowledgment coverage; thermostats that did not answer."""


def _now() -> datetime:
    """The services' "now": the wall clock, or with GRIDFLEX_CLOCK=simulated the latest tick."""
    from gridflex.clock import ClockNotStarted, latest_tick
    from gridflex.kafka_io import Codecs
    from gridflex.settings import ClockMode

    settings = _settings()
    if settings.clock is not ClockMode.SIMULATED:
        return datetime.now(timezone.utc)
    codecs = Codecs(settings)
    try:
        return asyncio.run(latest_tick(settings.kafka_bootstrap, codecs.topic_name(CLOCK), codecs.for_topic(CLOCK)))
    except ClockNotStarted:
        raise click.ClickException("the simulated clock has not started: publish a tick (`gridflex clock tick`)") from None


REASONS = click.Choice(["EMERGENCY", "GRID_STRESS", "HIGH_PRICE", "TEST"])
_wait_option = click.option("--wait", "wait_s", default=30.0, show_default=True,
                            help="Seconds to wait for the dispatch service's decision.")


def _decide(request: dict, wait_s: float) -> None:
    """Publish an event request, wait for its decision, and say it: exit 1 when rejected, 2 when
    no decision came in time."""
    from services.dispatch.operations import hours, submit_event_request

    step = asyncio.run(submit_event_request(_settings(), request, wait_s))
    event_id = request["event_id"]
    if step is None:
        click.echo(f"no decision on {request['action']} {event_id} within {wait_s:g} s: is the dispatch service "
                   "running? (`gridflex status`; a malformed request is in `gridflex dead-letters list "
                   "--source-topic utility.energy-events.v1`)", err=True)
        sys.exit(2)
    if step["status"] == "REJECTED":
        click.echo(f"REJECTED {request['action']} {event_id}:", err=True)
        for failure in step["failures"]:
            click.echo(f"  {failure['code']}: {failure['message']}", err=True)
        sys.exit(1)
    limit = f" of {hours(step['year_limit_ms'])}" if step["year_limit_ms"] is not None else ""
    click.echo(f"{step['status']} {event_id} (revision {step['revision']}): {step['start_at'].isoformat()} → "
               f"{step['end_at'].isoformat()}, counted {hours(step['counted_ms'])} h; "
               f"{hours(step['year_used_ms'])}{limit} h used this program year")


@events.command("publish")
@click.argument("program_id")
@click.option("--start", type=Instant(), required=True, help="Event start (ISO 8601; no offset = Pacific time).")
@click.option("--end", type=Instant(), required=True, help="Event end (ISO 8601; no offset = Pacific time).")
@click.option("--id", "event_id", help="Event id [default: PROGRAM_ID-<local start as YYYYMMDD-HHMM>, so "
                                       "publishing the same event twice is one event].")
@click.option("--offset", "setpoint_offset_f", type=click.IntRange(1, 10), default=4, show_default=True,
              help="Cooling setpoint raised by this many °F.")
@click.option("--precool/--no-precool", default=False, show_default=True, help="Pre-cool before the start.")
@click.option("--reason", type=REASONS, default="GRID_STRESS", show_default=True)
@click.option("--target", "targets", multiple=True, help="A provider to reach (repeatable) [default: all].")
@_wait_option
def events_publish(program_id, start, end, event_id, setpoint_offset_f, precool, reason, targets, wait_s) -> None:
    """Call an energy event in PROGRAM_ID (as the utility's dispatch system would) and print the
    dispatch service's decision: scheduled, or rejected with every program limit it breaks."""
    from gridflex.calendar import LOCAL_ZONE
    from services.dispatch.operations import event_request

    event_id = event_id or f"{program_id}-{start.astimezone(LOCAL_ZONE):%Y%m%d-%H%M}"
    _decide(event_request(event_id=event_id, program_id=program_id, action="SCHEDULE", reason=reason, start=start,
                          end=end, setpoint_offset_f=setpoint_offset_f, precool=precool, targets=list(targets),
                          issued_at=_now()), wait_s)


def _current_event(event_id: str) -> dict:
    from services.dispatch.operations import UnknownEvent, current_event

    try:
        return asyncio.run(current_event(_settings(), event_id))
    except UnknownEvent as exc:
        raise click.ClickException(str(exc)) from None


@events.command("update")
@click.argument("event_id")
@click.option("--start", type=Instant(), help="New start [default: unchanged].")
@click.option("--end", type=Instant(), help="New end [default: unchanged].")
@click.option("--offset", "setpoint_offset_f", type=click.IntRange(1, 10), help="New setpoint offset in °F.")
@click.option("--precool/--no-precool", default=None, help="Pre-cool or not [default: unchanged].")
@click.option("--reason", type=REASONS, default="GRID_STRESS", show_default=True)
@_wait_option
def events_update(event_id, start, end, setpoint_offset_f, precool, reason, wait_s) -> None:
    """Change a scheduled event (shorten it, move it, change the offset); what is not given stays.
    Its providers cannot change (cancel it and publish a new one). Prints the decision: updated,
    or rejected with the limits it would break."""
    from services.dispatch.operations import event_request

    event = _current_event(event_id)
    _decide(event_request(
        event_id=event_id, program_id=event["program_id"], action="UPDATE", reason=reason,
        start=start or event["start_at"], end=end or event["end_at"],
        setpoint_offset_f=setpoint_offset_f or event["setpoint_offset_f"],
        precool=event["precool"] if precool is None else precool,
        targets=list(event["targets"]), issued_at=_now()), wait_s)


@events.command("cancel")
@click.argument("event_id")
@click.option("--reason", type=REASONS, default="GRID_STRESS", show_default=True)
@_wait_option
def events_cancel(event_id, reason, wait_s) -> None:
    """Cancel an event: its thermostats get a CANCEL. Before its start it no longer counts
    against the program's hours; under way, it counts until now."""
    from services.dispatch.operations import event_request

    event = _current_event(event_id)
    _decide(event_request(
        event_id=event_id, program_id=event["program_id"], action="CANCEL", reason=reason, start=event["start_at"],
        end=event["end_at"], setpoint_offset_f=event["setpoint_offset_f"], precool=event["precool"],
        targets=list(event["targets"]), issued_at=_now()), wait_s)


@events.command("hours")
@click.option("--year", type=int, help="Calendar year [default: this year, Pacific].")
def events_hours(year: int | None) -> None:
    """Event hours used and left per program in a year (the dispatch service's ledger)."""
    from gridflex.calendar import local_date
    from services.dispatch.operations import program_hours_table

    year = year or local_date(datetime.now(timezone.utc)).year
    click.echo("\n".join(asyncio.run(program_hours_table(_settings(), year))))


@events.command("show")
@click.argument("event_id")
def events_show(event_id: str) -> None:
    """Every step of an event (each rejection with the rules it broke) and its deliveries."""
    from services.dispatch.operations import event_report

    lines = asyncio.run(event_report(_settings(), event_id))
    if lines is None:
        click.echo(f"no event {event_id!r} is known (has the dispatch service decided it yet?)", err=True)
        sys.exit(1)
    click.echo("\n".join(lines))


@events.command("unacknowledged")
@click.argument("event_id")
@click.option("--provider", help="Only this provider's thermostats.")
def events_unacknowledged(event_id: str, provider: str | None) -> None:
    """Thermostats an event reached whose provider had not acknowledged them by its start
    (tab-separated: provider, thermostat, account, answer, answered at)."""
    from services.dispatch.operations import unacknowledged_lines

    lines = asyncio.run(unacknowledged_lines(_settings(), event_id, provider))
    click.echo("\n".join(lines) if lines else "every thermostat reached had acknowledged by the start", err=not lines)


# -- accounts ------------------------------------------------------------------------------------


@main.group()
def accounts() -> None:
    """A service account: its enrollments and the decisions on it; its bill statements."""


@accounts.command("show")
@click.argument("service_account_id")
def accounts_show(service_account_id: str) -> None:
    """Enrollment periods (every provider), lockouts, data-sharing authorizations, every decision
    with the rules it failed, and the bill periods with credits."""
    from services.enrollment.operations import account_report
    from services.settlement.operations import statement_report

    enrollment = asyncio.run(account_report(_settings(), service_account_id))
    periods = asyncio.run(statement_report(_settings(), service_account_id, None))
    if enrollment is None and periods is None:
        click.echo(f"nothing is known of account {service_account_id!r} (no enrollment request, no credit)", err=True)
        sys.exit(1)
    click.echo("\n".join(enrollment or [f"account {service_account_id}: no enrollment request"]))
    click.echo("  bill periods with credits:")
    click.echo("\n".join(f"    {line}" for line in periods) if periods else "    none")


@accounts.command("statement")
@click.argument("service_account_id")
@click.argument("bill_period_start", type=click.DateTime(["%Y-%m-%d"]))
def accounts_statement(service_account_id: str, bill_period_start: datetime) -> None:
    """One bill period's statement: every credit and reversal line with the rule and the
    arithmetic behind it (BILL_PERIOD_START as listed by `gridflex accounts show`)."""
    from services.settlement.operations import statement_report

    lines = asyncio.run(statement_report(_settings(), service_account_id, bill_period_start.date()))
    if lines is None:
        click.echo(f"no statement for {service_account_id} starting {bill_period_start.date()} "
                   "(`gridflex accounts show` lists its bill periods)", err=True)
        sys.exit(1)
    click.echo("\n".join(lines))


# -- dead letters --------------------------------------------------------------------------------


@main.group("dead-letters")
def dead_letters() -> None:
    """Inspect and replay gridflex.dead-letters.v1: the records services refused, with why.

    Each command reads the topic from its beginning to its end as of the start and exits. A dead
    letter is named by its place on the dead-letter topic, PARTITION:OFFSET (first column of
    `list`). Filters of list, summary and replay: --service, --reason-code, --source-topic (repeat one to
    allow several values; different filters must all hold), --since/--until on failed_at
    (inclusive/exclusive; 7d, 36h, 90m ago, or ISO 8601, UTC unless a zone is given).

    `list` and `summary` never print keys or values (they may hold customer data); `show`
    prints one record in full. `replay` re-publishes originals to their source partition with a
    gridflex-replayed-from header, and refuses a dead letter replayed before unless --force.
    """


def _selection_options(command):
    options = [
        click.option("--service", "services", multiple=True, help="Only dead letters of this service (repeatable)."),
        click.option("--reason-code", "reason_codes", multiple=True,
                     help="Only this reason code, e.g. UNDECODABLE (repeatable, any case)."),
        click.option("--source-topic", "source_topics", multiple=True,
                     help="Only records refused from this topic, e.g. utility.meter-reads.v1 (repeatable)."),
        click.option("--since", help="failed_at at or after: 7d, 36h, 90m (ago) or ISO 8601."),
        click.option("--until", help="failed_at before: 7d, 36h, 90m (ago) or ISO 8601."),
        click.option("--timeout", "timeout_s", default=60.0, show_default=True,
                     help="Seconds allowed to read the topics to their end."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(settings: ServiceSettings, services, reason_codes, source_topics, since, until, refs=()):
    from gridflex.dead_letters import Selection, parse_instant

    now = datetime.now(timezone.utc)
    instants = {}
    for name, text in (("--since", since), ("--until", until)):
        try:
            instants[name] = parse_instant(text, now) if text else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None
    return Selection.of(services, reason_codes, source_topics, instants["--since"], instants["--until"], refs,
                        settings.topic_suffix)


def _run_reading(coroutine):
    """Run a dead-letter read; a missing topic or a read that cannot finish is exit status 2."""
    from gridflex.dead_letters import DeadLetterReadTimeout

    try:
        return asyncio.run(coroutine)
    except (LookupError, DeadLetterReadTimeout) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _read_dead_letters(settings: ServiceSettings, timeout_s: float):
    """Every dead letter as of now; an unreadable record is reported, never skipped silently."""
    from gridflex.dead_letters import read_dead_letters

    letters, unreadable = _run_reading(read_dead_letters(settings, timeout_s))
    for record in unreadable:
        click.echo(f"warning: {record.ref} on the dead-letter topic is not a DeadLetter ({record.reason})", err=True)
    return letters


def _json_lines(documents) -> None:
    import json

    for document in documents:
        click.echo(json.dumps(document, ensure_ascii=False))


@dead_letters.command("list")
@_selection_options
@click.option("--limit", type=click.IntRange(min=1), help="Only the N most recent failures.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line (key and value only as their sizes: key_bytes, value_bytes).")
def dead_letters_list(services, reason_codes, source_topics, since, until, timeout_s, limit, as_json) -> None:
    """The dead letters, oldest failure first: PARTITION:OFFSET, failed_at, service, source
    (topic[partition]@offset), reason code and reason (shortened). A count goes to stderr."""
    from gridflex.dead_letters import list_json, list_table

    settings = _settings()
    selection = _selection(settings, services, reason_codes, source_topics, since, until)
    letters = _read_dead_letters(settings, timeout_s)
    chosen = selection.select(letters)
    shown = chosen[-limit:] if limit else chosen
    if as_json:
        _json_lines(list_json(letter) for letter in shown)
    elif shown:
        click.echo("\n".join(list_table(shown)))
    click.echo(f"{len(shown)} shown, {len(chosen)} selected, {len(letters)} on the topic", err=True)


@dead_letters.command("summary")
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per service and reason code.")
def dead_letters_summary(services, reason_codes, source_topics, since, until, timeout_s, as_json) -> None:
    """How many dead letters per service and reason code (most first), with the first and last
    failed_at of each, and the total."""
    from gridflex.dead_letters import summarise, summary_json, summary_table

    settings = _settings()
    selection = _selection(settings, services, reason_codes, source_topics, since, until)
    rows = summarise(selection.select(_read_dead_letters(settings, timeout_s)))
    if as_json:
        _json_lines(summary_json(row) for row in rows)
    else:
        click.echo("\n".join(summary_table(rows)))


def _ref(value: str):
    from gridflex.dead_letters import DeadLetterRef

    try:
        return DeadLetterRef.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="PARTITION:OFFSET") from None


@dead_letters.command("show")
@click.argument("ref", metavar="PARTITION:OFFSET")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object; key and value as exact base64 plus their decoded form.")
@click.option("--timeout", "timeout_s", default=60.0, show_default=True, help="Seconds allowed to read.")
def dead_letters_show(ref: str, as_json: bool, timeout_s: float) -> None:
    """One dead letter in full, key and value included (they may hold customer data), and its
    earlier replays.

    Key and value are shown decoded when they can be: Avro single-object encoding of a schema
    under schemas/ (decoded with the project's codec), JSON, printable UTF-8; anything else as a
    hex dump, with a note when it looks like Confluent-framed Avro or an unknown schema."""
    from gridflex.dead_letters import inspect, show_json, show_lines

    wanted = _ref(ref)
    found = _run_reading(inspect(_settings(), wanted, timeout_s))
    if found.unreadable:
        click.echo(f"{wanted} on {found.topic} is not a DeadLetter ({found.unreadable.reason})", err=True)
        sys.exit(1)
    if found.letter is None:
        click.echo(f"no dead letter at {wanted} on {found.topic} (see `gridflex dead-letters list`)", err=True)
        sys.exit(1)
    if as_json:
        import json

        document = show_json(found.letter, found.topic, found.registry, found.marks, found.unreplayable)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(show_lines(found.letter, found.topic, found.registry, found.marks, found.unreplayable)))


@dead_letters.command("replay")
@click.argument("refs", nargs=-1, metavar="[PARTITION:OFFSET]...")
@_selection_options
@click.option("--all", "everything", is_flag=True, help="Every dead letter (needed when nothing else selects).")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed and what refused; send nothing.")
@click.option("--force", is_flag=True, help="Replay dead letters that were replayed before, again.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per selected dead letter with its outcome.")
def dead_letters_replay(refs, services, reason_codes, source_topics, since, until, timeout_s, everything, dry_run,
                        force, yes, as_json) -> None:
    """Re-publish the original key and value bytes of dead letters to their source topic.

    Select them by PARTITION:OFFSET arguments and/or the filters (both must hold), or --all.
    Each replay goes to the partition the original came from (keeping its place among the same
    key's records) with the headers gridflex-replayed-from: PARTITION:OFFSET,
    gridflex-dead-letter-topic and gridflex-replayed-at. Those headers are the durable record of
    the replay: a dead letter whose replay is found on its source partition is refused unless
    --force (a replay the service refuses again becomes a new dead letter, replayable once).
    The plan and its counts are printed first and confirmed (or --yes; --dry-run stops there).

    Limits of the check: it finds a replay only while the source topic keeps it (a compacted
    topic may drop it for a newer record of the same key; gridflex.clock.v1 keeps 7 days, dead
    letters 30), and two operators replaying the same letters at the same moment can both pass it.

    Exit status: 0 when everything selected was replayed (or would be, with --dry-run); 1 when
    some were refused (replayed before, or their source topic or partition is gone); 2 when
    nothing could be read or sent.
    """
    from gridflex.dead_letters import plan_replays, replay, replay_json

    settings = _settings()
    wanted = [_ref(ref) for ref in refs]
    selection = _selection(settings, services, reason_codes, source_topics, since, until, wanted)
    if selection.everything and not everything:
        raise click.UsageError("select dead letters (PARTITION:OFFSET, --service, --reason-code, --source-topic, "
                               "--since, --until) or give --all")
    request = _run_reading(plan_replays(settings, selection, force, timeout_s))
    plan = request.plan
    for record in request.unreadable:
        click.echo(f"{record.ref} on {request.topic} is not a DeadLetter ({record.reason}): not replayed", err=True)
    if request.not_found:
        click.echo(f"not selected: {', '.join(map(str, request.not_found))} (no dead letter there on "
                   f"{request.topic}, or the filters exclude it)", err=True)
    if not as_json and plan.lines():
        click.echo("\n".join(plan.lines()))
    landed = []
    if dry_run:
        click.echo(f"dry run: {plan.counts()}; nothing sent", err=True)
    elif plan.send:
        if not yes:
            click.echo(plan.counts(), err=True)
            click.confirm(f"Replay {len(plan.send)} dead letter(s)?", abort=True, err=True)
        try:
            landed = asyncio.run(replay(settings, plan.send, timeout_s))
        except Exception as exc:  # the broker's errors: say so; a new --dry-run shows what did land
            click.echo(f"replay failed: {type(exc).__name__}: {exc}; `replay --dry-run` shows what landed", err=True)
            sys.exit(2)
        if not as_json:
            click.echo("\n".join(f"replayed {mark.ref} -> {mark.topic}[{mark.partition}]@{mark.offset}"
                                 for mark in landed))
        click.echo(f"replayed {len(landed)}; refused {plan.refused}", err=True)
    else:
        click.echo(f"nothing to replay: {plan.counts()}", err=True)
    if as_json:
        _json_lines([*replay_json(plan, landed, dry_run),
                     *({"dead_letter": str(ref), "outcome": "not-selected"} for ref in request.not_found)])
    if plan.refused or request.unreadable or request.not_found:
        sys.exit(1)


# -- services ------------------------------------------------------------------------------------


@main.command("run")
@click.argument("service", type=click.Choice(SERVICES))
def run(service: str) -> None:
    """Run one service's worker in the foreground (Ctrl-C stops it cleanly)."""
    from faust import Worker

    from gridflex.logs import configure_logging
    from gridflex.metrics import tune_garbage_collection

    settings = _settings()
    logging_config = configure_logging(service, settings.log_level, settings.log_format)
    module = importlib.import_module(f"services.{service}.app")
    worker = Worker(
        module.app, loglevel=settings.log_level, logging_config=logging_config, redirect_stdouts=False,
        quiet=settings.log_format == "json",
    )
    tune_garbage_collection()
    worker.execute_from_commandline()


# -- simulated time ------------------------------------------------------------------------------


@main.group()
def clock() -> None:
    """Simulated time for demos and tests (gridflex.clock.v1)."""


@clock.command("tick")
@click.argument("now", required=False)
def clock_tick(now: str | None) -> None:
    """Publish NOW (ISO 8601, e.g. 2026-07-15T21:00:00Z; default: the wall clock)."""
    instant = datetime.fromisoformat(now.replace("Z", "+00:00")) if now else datetime.now(timezone.utc)
    if instant.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2026-07-15T14:00:00-07:00 or …Z", param_hint="NOW")
    asyncio.run(_publish_tick(_settings(), instant))
    click.echo(f"clock: {instant.astimezone(timezone.utc).isoformat()}")


async def _publish_tick(settings: ServiceSettings, instant: datetime) -> None:
    from gridflex.kafka_io import RecordProducer

    async with RecordProducer(settings) as producer:
        await producer.send(CLOCK, "clock", {"now": instant})


# -- schemas -------------------------------------------------------------------------------------


@main.group()
def schemas() -> None:
    """The Avro contracts under schemas/."""


@schemas.command("check")
@click.option("--against", default="main", show_default=True, help="git revision whose schemas must stay readable")
def schemas_check(against: str) -> None:
    """Every schema parses and stays backward compatible with its version at AGAINST."""
    from gridflex.schema_check import check_repository

    problems = check_repository(_settings().schemas_dir, against)
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo("schemas: all parse; every earlier version stays readable")


# -- commands kept beside what they operate -------------------------------------------------------

main.add_command(import_group)
main.add_command(vtn_group)


if __name__ == "__main__":
    main()
