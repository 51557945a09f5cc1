"""A realistic load for the enrollment service: customer accounts, one enrollment request each.

Every account is published by the utility (``utility.customer-accounts.v1``) and gets one ENROLL
request for ``sce-sep-2025`` from one of two providers (``partner.<provider>.enrollment-requests.v1``),
dated in the 30 days before the simulated "now". The mix (seeded, so every run is the same):

- most accounts are eligible: residential or business on one of the program's rate schedules,
  SMARTCONNECT meter, no other program, or one the program lets them keep (ELRP A.4, A.1);
- some are not: a rate the program excludes (TOU-D-PRIME), a conflicting program (CPP, SDP),
  another meter, service ended before the request;
- a few requests name a thermostat that does not control central A/C, and a few a thermostat
  from a utility program (accepted, but it earns no sign-up bonus).

What the service must decide is computed with the service's own rules
(:mod:`services.enrollment.domain.eligibility` over the program catalogue), so a benchmark run
also checks every decision.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

from gridflex import REPO_ROOT
from gridflex.calendar import local_date
from gridflex.programs import ProgramCatalogue
from gridflex.topics import ENROLLMENT_REQUESTS
from services.enrollment.domain.eligibility import account_failures, program_failures, thermostat_failures

PROGRAM_ID = "sce-sep-2025"
PROVIDERS = {"energyhub": 0.55, "resideo": 0.45}  # share of the requests
CLOCK_NOW = datetime(2025, 7, 1, 17, tzinfo=timezone.utc)  # a Tuesday, 10:00 in Los Angeles
REQUEST_WINDOW = timedelta(days=30)  # requests are dated up to this long before "now", never after
SEED = 20250701

RESIDENTIAL_RATES = ["D", "D-CARE", "D-FERA", "TOU-D", "TOU-D-T"]
BUSINESS_RATES = ["TOU-GS-1", "TOU-GS-2", "TOU-GS-1-RTP", "TOU-GS-2-RTP"]
THERMOSTAT_MODELS = ["T10", "T9", "T6 Pro", "Lyric T5", "Sensi Touch", "Nest Learning"]
# (kind of account, share): what sets it apart from an eligible residential account
ACCOUNT_MIX = [
    ("eligible", 0.74),
    ("business", 0.08),
    ("dual ELRP_A4", 0.05),
    ("business dual ELRP_A1", 0.01),
    ("ineligible rate", 0.05),
    ("conflicting program", 0.04),
    ("other meter", 0.02),
    ("closed", 0.01),
]
NO_CENTRAL_AC_SHARE = 0.02
UTILITY_PROGRAM_SHARE = 0.03


@dataclass(frozen=True)
class Expectation:
    """What the service must decide for one request."""

    provider_id: str
    accepted: bool
    earns_bonus: bool  # an accepted request whose claim the bonus fund decides (not a utility thermostat)


class EnrollmentLoad:
    """``records`` accounts and as many requests, with the decision each request must get."""

    def __init__(self, records: int):
        self.records = records
        self.program = ProgramCatalogue.load(REPO_ROOT / "programs")[PROGRAM_ID]
        self.random = random.Random(SEED)
        self.accounts = [self._account(number) for number in range(records)]
        self.requests = [(self._provider(), self._request(number)) for number in range(records)]
        self.expected = {
            request["request_id"]: self._expect(provider, account, request)
            for account, (provider, request) in zip(self.accounts, self.requests)
        }

    @property
    def clock_now(self) -> datetime:
        return CLOCK_NOW

    @property
    def accepted(self) -> int:
        return sum(expectation.accepted for expectation in self.expected.values())

    @property
    def bonus_claims(self) -> int:
        """Accepted requests whose bonus claim is decided against the fund, in log order."""
        return sum(expectation.earns_bonus for expectation in self.expected.values())

    @property
    def bonuses_funded(self) -> int:
        bonus = self.program.signup_bonus
        return int(bonus.fund // bonus.amount)

    def topic_records(self) -> Iterator[tuple[str, str, dict]]:
        """``(topic, key, value)``: every account, then every request."""
        for account in self.accounts:
            yield "utility.customer-accounts.v1", account["service_account_id"], account
        for provider, request in self.requests:
            yield ENROLLMENT_REQUESTS.format(provider_id=provider), request["service_account_id"], request

    # -- records ------------------------------------------------------------------------------

    def _account(self, number: int) -> dict:
        kind = self.random.choices([k for k, _ in ACCOUNT_MIX], weights=[w for _, w in ACCOUNT_MIX])[0]
        business = kind.startswith("business")
        start = date(2010, 1, 1) + timedelta(days=self.random.randrange(15 * 365))
        account = {
            "service_account_id": account_id(number),
            "customer_class": "BUSINESS" if business else "RESIDENTIAL",
            "rate_schedule": self.random.choice(BUSINESS_RATES if business else RESIDENTIAL_RATES),
            "meter_type": "SMARTCONNECT",
            "service_start": start,
            "service_end": None,
            "net_metering_since": start + timedelta(days=400) if self.random.random() < 0.1 else None,
            "bill_cycle_day": self.random.randint(1, 28),
            "programs": [],
            "joint_gas_customer": self.random.random() < 0.4,
            "updated_at": CLOCK_NOW - timedelta(days=60, seconds=self.random.randrange(86_400 * 30)),
        }
        if kind == "dual ELRP_A4":
            account["programs"] = ["ELRP_A4"]
        elif kind == "business dual ELRP_A1":
            account["programs"] = ["ELRP_A1"]
        elif kind == "ineligible rate":
            account["rate_schedule"] = "TOU-D-PRIME"
        elif kind == "conflicting program":
            account["programs"] = self.random.choice([["CPP"], ["SDP"], ["CPP", "SDP"]])
        elif kind == "other meter":
            account["meter_type"] = "ELECTROMECHANICAL"
        elif kind == "closed":
            account["service_end"] = date(2025, 5, 1) + timedelta(days=self.random.randrange(20))
        return account

    def _provider(self) -> str:
        return self.random.choices(list(PROVIDERS), weights=list(PROVIDERS.values()))[0]

    def _request(self, number: int) -> dict:
        return {
            "request_id": f"REQ-{number:08d}",
            "program_id": PROGRAM_ID,
            "action": "ENROLL",
            "service_account_id": account_id(number),
            "thermostat_serial": f"TS-{number:08d}",
            "thermostat_model": self.random.choice(THERMOSTAT_MODELS),
            "controls_central_ac": self.random.random() >= NO_CENTRAL_AC_SHARE,
            "thermostat_source": "UTILITY_PROGRAM" if self.random.random() < UTILITY_PROGRAM_SHARE else "RETAIL",
            "requested_at": CLOCK_NOW - timedelta(seconds=self.random.randrange(int(REQUEST_WINDOW.total_seconds()))),
        }

    def _expect(self, provider: str, account: dict, request: dict) -> Expectation:
        program = self.program
        day = local_date(request["requested_at"])
        failures = (program_failures(program, PROGRAM_ID, provider, day) + account_failures(program, account, day)
                    + thermostat_failures(program, request))
        # No data-sharing authorizations are published: a program that requires one rejects every request.
        accepted = not failures and not program.eligibility.requires_data_sharing_authorization
        earns_bonus = (accepted and program.signup_bonus is not None
                       and request["thermostat_source"] not in program.signup_bonus.excluded_thermostat_sources)
        return Expectation(provider, accepted, earns_bonus)


def account_id(number: int) -> str:
    return f"SA-{4_000_000 + number}"
