"""The ``gridflex`` operator command: the local stack, topics, providers, services, the clock."""

from __future__ import annotations

import asyncio
import importlib
import sys
from datetime import datetime, timezone

import click
import structlog

from gridflex import stack as local_stack
from gridflex.settings import ServiceSettings
from gridflex.topics import CLOCK, InvalidProviderId, TopicCatalogue, create_topics

SERVICES = ("telemetry", "enrollment", "dispatch", "baseline", "settlement")


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
@click.argument("provider_id")
def partner_add(provider_id: str) -> None:
    """Onboard a provider: create its partner.<provider_id>.* topics."""
    settings = _settings()
    catalogue = TopicCatalogue.load(settings.schemas_dir)
    try:
        specs = catalogue.partner_topics(provider_id)
    except InvalidProviderId as exc:
        raise click.BadParameter(str(exc), param_hint="PROVIDER_ID") from None
    created = asyncio.run(create_topics(settings.kafka_bootstrap, specs))
    for spec in specs:
        click.echo(f"{spec.name}: {'created' if spec.name in created else 'exists'}")


@partner.command("credential")
@click.argument("provider_id")
@click.option("--revoke", is_flag=True, help="Revoke every token of PROVIDER_ID instead of minting one.")
def partner_credential(provider_id: str, revoke: bool) -> None:
    """Mint an API token for PROVIDER_ID, printed once (only its SHA-256 is stored), or --revoke all its tokens."""
    from gridflex.topics import validate_provider_id

    try:
        validate_provider_id(provider_id)
    except InvalidProviderId as exc:
        raise click.BadParameter(str(exc), param_hint="PROVIDER_ID") from None
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
    """Energy events (dispatch): program hours, an event's life, thermostats that did not answer."""


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


if __name__ == "__main__":
    main()
