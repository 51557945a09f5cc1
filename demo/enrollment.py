"""The weeks before the demo day, for the enrollment service: what the demo sends, step by step,
and the decision each request should get.

The utility publishes its service accounts (the telemetry day's metered accounts, plus one whose
service ended in June); two providers, EnergyHub and Resideo, send enrollment requests for the
current Smart Energy Program terms, most on their Kafka topics, a few over the HTTP API. Most
accounts are eligible residential ones on TOU-D and the other residential rates; a few break a
rule of ``programs/sce-sep-2025.yaml``, each on purpose and labelled. Into that go what real
providers send too: a request re-delivered, a request for an account the utility publishes a day
later, one for an account number with a typo, a thermostat from a utility program, a second
thermostat on an account, a request for the closed earlier terms, and a customer who cancels.

The thermostats that report their state on the telemetry day are enrolled here, on the same
accounts, so they are in effect by then.

Pure: this module builds records (dicts) and the outcome expected for each; it sends nothing.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from gridflex.calendar import LOCAL_ZONE, add_business_days, is_business_day, local_date
from gridflex.programs import Program, ProgramCatalogue

from demo.scenario import DayScenario, reporting_thermostats

PROGRAM_ID = "sce-sep-2025"  # the current terms, open to EnergyHub and Resideo
EARLIER_TERMS_ID = "sce-sep-legacy"  # closed at the end of 2024
PROVIDERS = ("energyhub", "resideo")
UNKNOWN_ACCOUNT_WAIT = timedelta(hours=24)  # given to the service (GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S)
DECISION_WAIT_S = 10  # a provider asks for a decision with ?wait=: the API holds the answer until it is made
KAFKA, HTTP = "Kafka", "HTTP"
ACCEPTED, REJECTED = "ACCEPTED", "REJECTED"
GRANTED, DENIED, CANCELLED = "GRANTED", "DENIED", "CANCELLED"
FIRST_REQUEST_DAYS_BEFORE = 18  # the first sign-ups are dated this many days before the telemetry day
CLOSED_ACCOUNT_ID = "SA-198842"  # service ended in June: not among the metered accounts
MISTYPED_ACCOUNT_ID = "SA-2041O7"  # a letter O for a zero: the utility has no such account

# The residential rates the program accepts, with the share of plain accounts on each.
RESIDENTIAL_RATES = {"TOU-D": 55, "D-CARE": 20, "D": 10, "TOU-D-T": 8, "D-FERA": 7}
MODELS = {
    "energyhub": ("ecobee3 lite", "ecobee Smart Thermostat Premium", "Honeywell Home T6 Pro", "Sensi Touch 2"),
    "resideo": ("Honeywell Home T9", "Honeywell Home T10 Pro", "Honeywell Home T5+"),
}
PLAIN_ENROLLING = 3  # of every 4 plain accounts, this many sign up
SPECIAL_ACCOUNTS = 17  # the first metered accounts each play a part below; MIN_ACCOUNTS leaves room for plain ones


@dataclass
class EnrollmentCase:
    """One request a provider sends, and the decision (and sign-up bonus) it should get."""

    provider_id: str
    request: dict  # EnrollmentRequest; over HTTP, requested_at is left to the API (the clock's now)
    channel: str  # KAFKA or HTTP
    outcome: str  # ACCEPTED or REJECTED
    failures: tuple[str, ...] = ()  # every rule code the decision must list
    bonus: str | None = None  # GRANTED or DENIED: the sign-up bonus claim's outcome; None: no claim
    bonus_failures: tuple[str, ...] = ()
    kind: str | None = None  # what is special about it, for people; None for a plain sign-up …
    note: str | None = None  # … and the details
    cancels_bonus_of: "EnrollmentCase | None" = None  # a disenrollment: the enrollment whose bonus it cancels
    cancelled_by: "EnrollmentCase | None" = None

    @property
    def key(self) -> tuple[str, str]:
        """A request's identity: request ids are each provider's own."""
        return self.provider_id, self.request["request_id"]

    @property
    def service_account_id(self) -> str:
        return self.request["service_account_id"]

    @property
    def serial(self) -> str:
        return self.request["thermostat_serial"]

    @property
    def action(self) -> str:
        return self.request["action"]

    @property
    def request_day(self) -> date:
        return local_date(self.request["requested_at"])

    def http_body(self) -> dict:
        """The JSON a provider POSTs: the request without requested_at (the API stamps it)."""
        return {name: value for name, value in self.request.items() if name != "requested_at"}


@dataclass
class ApiCall:
    """One call to the enrollment API, and the status it should get."""

    caller: str | None  # the provider whose bearer token is sent; None: no token
    method: str
    path: str
    status: int  # expected
    purpose: str  # for people
    case: EnrollmentCase | None = None  # the request submitted, or whose decision is asked for
    body: dict | None = None
    periods: int | None = None  # an account view: how many of the caller's periods it must show

    @classmethod
    def submit(cls, case: EnrollmentCase) -> "ApiCall":
        return cls(case.provider_id, "POST", f"/v1/providers/{case.provider_id}/enrollment-requests", 202,
                   case.kind or "sign-up", case, case.http_body())

    @classmethod
    def decision(cls, case: EnrollmentCase, wait_s: int) -> "ApiCall":
        path = f"/v1/providers/{case.provider_id}/enrollment-requests/{case.request['request_id']}?wait={wait_s}"
        return cls(case.provider_id, "GET", path, 200, f"the decision on its {case.kind or 'sign-up'}", case)


@dataclass
class EnrollmentStep:
    """One moment of simulated time: the clock ticks to ``at``, then this step's records go out."""

    at: datetime  # UTC
    what: str  # for people
    accounts: list[dict] = field(default_factory=list)  # CustomerAccount facts the utility publishes
    requests: list[EnrollmentCase] = field(default_factory=list)  # sent for the first time (Kafka or HTTP)
    redeliveries: list[EnrollmentCase] = field(default_factory=list)  # sent again on Kafka, same request_id
    decided: list[EnrollmentCase] = field(default_factory=list)  # what the service decides at this step
    calls: list[ApiCall] = field(default_factory=list)  # HTTP submissions and refusals, after the Kafka records

    @property
    def label(self) -> str:
        return f"{self.at.astimezone(LOCAL_ZONE):%a %m-%d %H:%M}"

    @property
    def bonus_decisions(self) -> int:
        """Sign-up bonus decisions this step brings: a claim per accepted enrollment, a cancellation
        per disenrollment that cancels one."""
        claims = sum(1 for case in self.decided if case.bonus is not None)
        return claims + sum(1 for case in self.decided if case.cancels_bonus_of is not None)


@dataclass
class EnrollmentScenario:
    program: Program
    steps: list[EnrollmentStep]
    cases: list[EnrollmentCase]
    accounts: dict[str, dict]  # every account the utility publishes, by id
    readback: list[ApiCall] = field(default_factory=list)  # what the providers ask once everything is decided

    @property
    def http_cases(self) -> list[EnrollmentCase]:
        return [case for case in self.cases if case.channel == HTTP]

    @property
    def redelivered(self) -> list[EnrollmentCase]:
        return [case for step in self.steps for case in step.redeliveries]

    def case(self, provider_id: str, request_id: str) -> EnrollmentCase | None:
        return next((case for case in self.cases if case.key == (provider_id, request_id)), None)

    def effective_date(self, case: EnrollmentCase) -> date:
        """The day an accepted request takes effect: the n-th business day after the request's
        local date (n from the program file), counted here independently of the service."""
        return add_business_days(case.request_day, self.program.enrollment_effective_business_days)

    def expected_periods(self) -> dict[str, set[tuple]]:
        """Account → its enrollment periods: (provider, serial, request_id, effective_from, effective_to)."""
        periods: dict[str, set[tuple]] = {}
        for case in self.cases:
            if case.action == "ENROLL" and case.outcome == ACCEPTED:
                ends = self.effective_date(case.cancelled_by) if case.cancelled_by else None
                periods.setdefault(case.service_account_id, set()).add(
                    (case.provider_id, case.serial, case.request["request_id"], self.effective_date(case), ends))
        return periods


def skipped_days(day: date, effective: date) -> list[date]:
    """The days between a request and its effective date that are not business days."""
    return [day + timedelta(days=n) for n in range(1, (effective - day).days) if
            not is_business_day(day + timedelta(days=n))]


def hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} h"


def local_instant(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=LOCAL_ZONE).astimezone(timezone.utc)


# -- the accounts ---------------------------------------------------------------------------------


def plain_account(service_account_id: str, published_at: datetime, rng: random.Random) -> dict:
    """An eligible residential account: SmartConnect meter, one of the program's residential rates,
    no other program; some with rooftop solar on net metering, some SoCalGas customers too."""
    start = date(2008, 1, 1) + timedelta(days=rng.randrange(16 * 365))
    return {
        "service_account_id": service_account_id, "customer_class": "RESIDENTIAL",
        "rate_schedule": rng.choices(list(RESIDENTIAL_RATES), weights=list(RESIDENTIAL_RATES.values()))[0],
        "meter_type": "SMARTCONNECT", "service_start": start, "service_end": None,
        "net_metering_since": start + timedelta(days=rng.randrange(200, 900)) if rng.random() < 0.12 else None,
        "bill_cycle_day": rng.randint(1, 28), "programs": [], "joint_gas_customer": rng.random() < 0.45,
        "updated_at": published_at - timedelta(days=rng.randrange(2, 300), minutes=rng.randrange(1440)),
    }


# -- the requests ---------------------------------------------------------------------------------


class Requests:
    """Makes requests in each provider's own style: EnergyHub numbers its requests, Resideo sends UUIDs."""

    def __init__(self, rng: random.Random, taken_serials: set[str]):
        self.rng = rng
        self.numbers = {provider: 0 for provider in PROVIDERS}
        self.serials = set(taken_serials)  # a serial is one device: never issued twice

    def request_id(self, provider_id: str) -> str:
        self.numbers[provider_id] += 1
        if provider_id == "energyhub":
            return f"ehe-{self.numbers[provider_id]:06d}"
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def serial(self, provider_id: str) -> str:
        while True:
            if provider_id == "energyhub":
                serial = f"EH-{self.rng.randrange(16 ** 4):04X}-{self.rng.randrange(16 ** 4):04X}"
            else:
                serial = f"RS-{self.rng.choice(('7Q2K', '7Q3M', '8B1X'))}-{self.rng.randrange(10 ** 4):04d}"
            if serial not in self.serials:
                self.serials.add(serial)
                return serial

    def make(self, provider_id: str, account_id: str, requested_at: datetime, *, serial: str | None = None,
             program_id: str = PROGRAM_ID, action: str = "ENROLL", central_ac: bool = True,
             source: str = "RETAIL") -> dict:
        return {
            "request_id": self.request_id(provider_id), "program_id": program_id, "action": action,
            "service_account_id": account_id, "thermostat_serial": serial or self.serial(provider_id),
            "thermostat_model": self.rng.choice(MODELS[provider_id]), "controls_central_ac": central_ac,
            "thermostat_source": source, "requested_at": requested_at,
        }


def build_enrollment(day: DayScenario, programs: ProgramCatalogue, seed: int) -> EnrollmentScenario:
    """Accounts and requests over the weeks before ``day``, with what the service should decide."""
    rng = random.Random(seed)
    program = programs[PROGRAM_ID]
    ids = [account.service_account_id for account in day.accounts]
    first = day.day - timedelta(days=FIRST_REQUEST_DAYS_BEFORE)
    publish = EnrollmentStep(local_instant(first - timedelta(days=1), 6), "the utility publishes its accounts")
    batch_a = EnrollmentStep(local_instant(first, 20), "providers send the day's sign-ups")
    batch_b = EnrollmentStep(local_instant(first + timedelta(days=3), 12), "providers send the sign-ups since")
    batch_c = EnrollmentStep(local_instant(first + timedelta(days=3), 21), "providers send the afternoon's sign-ups")
    late = EnrollmentStep(local_instant(first + timedelta(days=4), 6), "the utility publishes a new move-in's account")
    cancel = EnrollmentStep(local_instant(first + timedelta(days=4), 10), "a customer cancels over the HTTP API")
    expiry = EnrollmentStep(batch_c.at + UNKNOWN_ACCOUNT_WAIT + timedelta(hours=1),
                            f"{hours(UNKNOWN_ACCOUNT_WAIT)} after the last sign-ups")
    steps = [publish, batch_a, batch_b, batch_c, late, cancel, expiry]
    windows = {id(batch_a): (batch_a.at - timedelta(hours=24), batch_a.at),
               id(batch_b): (batch_a.at, batch_b.at), id(batch_c): (batch_b.at, batch_c.at)}

    def sometime_in(step: EnrollmentStep) -> datetime:
        start, end = windows[id(step)]
        instant = start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))
        return instant.replace(microsecond=0)

    accounts = {account_id: plain_account(account_id, publish.at, rng) for account_id in ids}
    # The thermostats that report on the telemetry day, enrolled on their accounts.
    thermostats = {index: (provider, serial) for provider, serial, index in reporting_thermostats()}
    requests = Requests(rng, {serial for _, serial in thermostats.values()})
    cases: list[EnrollmentCase] = []

    def send(step: EnrollmentStep, provider: str, account_id: str, outcome: str = ACCEPTED,
             failures: tuple[str, ...] = (), bonus: str | None = GRANTED, bonus_failures: tuple[str, ...] = (),
             channel: str = KAFKA, kind: str | None = None, note: str | None = None, at: datetime | None = None,
             **request) -> EnrollmentCase:
        requested_at = step.at if channel == HTTP else at or sometime_in(step)
        case = EnrollmentCase(provider, requests.make(provider, account_id, requested_at, **request), channel,
                              outcome, failures, bonus if outcome == ACCEPTED else None, bonus_failures, kind, note)
        step.requests.append(case)
        if channel == HTTP:
            step.calls.append(ApiCall.submit(case))
        step.decided.append(case)
        cases.append(case)
        return case

    def special(index: int, **facts) -> str:
        accounts[ids[index]].update(facts)
        return ids[index]

    (p0, s0), (p1, s1), (p2, s2), (p3, s3) = (thermostats[i] for i in range(4))
    send(batch_b, p0, special(0, rate_schedule="TOU-D"), serial=s0)
    send(batch_b, p1, special(1, rate_schedule="D-CARE"), serial=s1, channel=HTTP)
    send(batch_a, p2, special(2, rate_schedule="TOU-D", net_metering_since=date(2021, 4, 12)), serial=s2,
         kind="net metering", note="rooftop solar since 2021: the SEP terms do not exclude net metering")
    send(batch_b, p3, special(3, rate_schedule="TOU-D"), serial=s3, channel=HTTP)
    second = requests.serial(p3)
    send(batch_c, p3, ids[3], serial=second, bonus=DENIED,
         bonus_failures=("BONUS_NOT_NEW_ENROLLMENT", "BONUS_ACCOUNT_ALREADY_PAID"), kind="second thermostat",
         note=f"{second} upstairs, same account as {s3}: enrolled, but one bonus per account")

    # Accounts the program's rules accept although they are not plain.
    send(batch_a, "energyhub", special(4, programs=["ELRP_A4"]), kind="dual participation",
         note="residential ELRP sub-group A.4 may stay in the Emergency Load Reduction Program")
    send(batch_b, "resideo", special(9, customer_class="BUSINESS", rate_schedule="TOU-GS-1", programs=["ELRP_A1"]),
         kind="small business", note="TOU-GS-1 with ELRP A.1, the business sub-group that may dual-participate")
    # … and what they refuse, every failed rule listed.
    send(batch_b, "resideo", special(5, rate_schedule="TOU-D-PRIME"), REJECTED, ("RATE_SCHEDULE_NOT_ELIGIBLE",),
         kind="ineligible rate", note="TOU-D-PRIME is not among the program's rate schedules")
    send(batch_b, "energyhub", special(6, rate_schedule="D", programs=["SDP"]), REJECTED, ("CONFLICTING_PROGRAM",),
         kind="other program", note="already in the Summer Discount Plan")
    send(batch_c, "resideo", special(7, programs=["MEDICAL_BASELINE_AC"]), REJECTED, ("CONFLICTING_PROGRAM",),
         kind="other program", note="Medical Baseline allocation for air conditioning")
    send(batch_c, "energyhub", special(8, customer_class="BUSINESS", rate_schedule="TOU-GS-3", programs=["CPP"]),
         REJECTED, ("RATE_SCHEDULE_NOT_ELIGIBLE", "CONFLICTING_PROGRAM"), kind="large business",
         note="TOU-GS-3 and Critical Peak Pricing: two rules fail, both listed")
    send(batch_a, "energyhub", special(10, meter_type="ANALOG"), REJECTED, ("METER_NOT_ELIGIBLE",),
         kind="meter opt-out", note="an analog meter instead of an Edison SmartConnect meter")
    send(batch_b, "resideo", special(11), REJECTED, ("NO_CENTRAL_AC",), central_ac=False,
         kind="no central A/C", note="the thermostat runs a ductless mini-split")
    accounts[CLOSED_ACCOUNT_ID] = {**plain_account(CLOSED_ACCOUNT_ID, publish.at, rng),
                                   "service_end": first - timedelta(days=8)}
    send(batch_b, "energyhub", CLOSED_ACCOUNT_ID, REJECTED, ("ACCOUNT_CLOSED",), kind="closed account",
         note=f"the customer moved out on {first - timedelta(days=8)}; the app still had the old account")
    send(batch_a, "resideo", special(16), REJECTED, ("PROGRAM_NOT_OPEN", "PROVIDER_NOT_AUTHORIZED"),
         program_id=EARLIER_TERMS_ID, kind="earlier terms",
         note=f"{EARLIER_TERMS_ID} closed at the end of 2024, and never had Resideo as a provider")

    # Bonus rules.
    send(batch_b, "energyhub", special(12), bonus=DENIED, bonus_failures=("BONUS_UTILITY_PROGRAM_THERMOSTAT",),
         source="UTILITY_PROGRAM", channel=HTTP, kind="utility thermostat",
         note="installed by the Energy Savings Assistance program: enrolled, no sign-up bonus")
    # Signed up the morning of the step, so the bonus cannot have been posted before the cancellation.
    changed_mind = send(batch_b, "energyhub", special(15), kind="cancelled", at=batch_b.at - timedelta(hours=3),
                        note="the customer cancels the next morning")
    disenroll = EnrollmentCase(
        "energyhub", requests.make("energyhub", ids[15], cancel.at, serial=changed_mind.serial, action="DISENROLL"),
        HTTP, ACCEPTED, kind="disenrollment", cancels_bonus_of=changed_mind,
        note=f"{changed_mind.serial} leaves; its bonus is not posted yet, so it is cancelled")
    changed_mind.cancelled_by = disenroll
    cancel.requests.append(disenroll)
    cancel.calls.append(ApiCall.submit(disenroll))
    cancel.decided.append(disenroll)
    cases.append(disenroll)

    # What the feeds carry too.
    retried = send(batch_b, "resideo", special(14), kind="re-delivered",
                   note="sent again with the afternoon's batch (the provider missed the acknowledgement)")
    batch_c.redeliveries.append(retried)
    move_in = special(13, service_start=late.at.astimezone(LOCAL_ZONE).date() - timedelta(days=1),
                      updated_at=late.at - timedelta(minutes=30))
    waiting = send(batch_c, "energyhub", move_in, kind="account not yet published",
                   note="a move-in the utility publishes the next morning: the request waits for it")
    batch_c.decided.remove(waiting)
    late.decided.append(waiting)
    mistyped = send(batch_c, "energyhub", MISTYPED_ACCOUNT_ID, REJECTED, ("UNKNOWN_ACCOUNT",), kind="unknown account",
                    note=f"a letter O for a zero in the account number; rejected once {hours(UNKNOWN_ACCOUNT_WAIT)} pass")
    batch_c.decided.remove(mistyped)
    expiry.decided.append(mistyped)

    # Plain sign-ups: most of the other accounts, from either provider, in any of the three batches.
    for index, account_id in enumerate(ids):
        if index < SPECIAL_ACCOUNTS or rng.randrange(4) >= PLAIN_ENROLLING:
            continue
        provider = rng.choices(PROVIDERS, weights=(55, 45))[0]
        send(rng.choice((batch_a, batch_b, batch_c)), provider, account_id)

    # Who may call: a token acts for its own provider only, and there is no anonymous access.
    shared = ids[3]
    resideo_submission = next(call for call in batch_b.calls if call.caller == "resideo")
    foreign = dict(resideo_submission.body, request_id=requests.request_id("resideo"))
    batch_b.calls += [
        ApiCall("resideo", "POST", "/v1/providers/energyhub/enrollment-requests", 403,
                "Resideo's token on EnergyHub's path", body=foreign),
        ApiCall(None, "GET", f"/v1/providers/energyhub/accounts/{ids[1]}", 401, "no token"),
    ]
    batch_b.what = (f"providers send the sign-ups since; {sum(c.channel == HTTP for c in batch_b.requests)} "
                    "come over the HTTP API")
    readback = [ApiCall.decision(case, DECISION_WAIT_S) for case in cases if case.channel == HTTP]
    readback += [
        ApiCall(p3, "GET", f"/v1/providers/{p3}/accounts/{shared}", 200, "an account with two of its thermostats",
                periods=2),
        ApiCall("energyhub", "GET", f"/v1/providers/energyhub/accounts/{shared}", 404,
                "the same account, where EnergyHub has nothing"),
    ]

    publish.accounts = [facts for account_id, facts in accounts.items() if account_id != move_in]
    late.accounts = [accounts[move_in]]
    for step in (batch_a, batch_b, batch_c):  # a provider sends its batch in the order customers signed up
        step.requests.sort(key=lambda case: (case.channel, case.request["requested_at"]))
    return EnrollmentScenario(program, steps, cases, accounts, readback)
