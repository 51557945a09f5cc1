"""Enrollment rules with the seeds' own values: eligibility, effective dates, bonus, rebate, lifecycle."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gridflex import REPO_ROOT
from gridflex.calendar import add_business_days
from gridflex.programs import ProgramCatalogue
from gridflex.state import decode_value, encode_value
from services.enrollment.domain import accounts
from services.enrollment.domain.accounts import AccountBook, Outcome
from services.enrollment.domain.incentives import ClaimRefused, IncentiveLedger

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
NOW = datetime(2025, 7, 1, 17, tzinfo=timezone.utc)  # Tuesday 2025-07-01, 10:00 in Los Angeles


def account(**facts) -> dict:
    base = {
        "service_account_id": "SA-1", "customer_class": "RESIDENTIAL", "rate_schedule": "TOU-D",
        "meter_type": "SMARTCONNECT", "service_start": date(2020, 1, 1), "service_end": None,
        "net_metering_since": None, "bill_cycle_day": 1, "programs": [], "joint_gas_customer": False,
        "updated_at": NOW - timedelta(days=30),
    }
    return {**base, **facts}


def request(request_id="R-1", program_id="sce-sep-2025", action="ENROLL", serial="T-1", **fields) -> dict:
    base = {
        "request_id": request_id, "program_id": program_id, "action": action, "service_account_id": "SA-1",
        "thermostat_serial": serial, "thermostat_model": "T9", "controls_central_ac": True,
        "thermostat_source": "RETAIL", "requested_at": NOW,
    }
    return {**base, **fields}


def decide(book: AccountBook, req: dict, provider="energyhub", now=NOW) -> Outcome:
    outcome = Outcome()
    accounts.decide(book, provider, req, PROGRAMS, now, outcome)
    return outcome


def codes(outcome: Outcome) -> list[str]:
    [decision] = outcome.decisions
    return [f["code"] for f in decision["failures"]]


# -- eligibility ------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", ["D", "D-CARE", "D-FERA", "TOU-D", "TOU-D-T", "TOU-GS-1", "TOU-GS-2",
                                  "TOU-GS-1-RTP", "TOU-GS-2-RTP"])
def test_each_eligible_rate_schedule_is_accepted(rate):
    outcome = decide(AccountBook("SA-1", account(rate_schedule=rate)), request())
    assert outcome.decisions[0]["outcome"] == "ACCEPTED"


def test_a_rejection_lists_every_failed_rule_with_its_sentence():
    book = AccountBook("SA-1", account(rate_schedule="TOU-D-PRIME", meter_type="ANALOG", programs=["CPP", "SDP"]))
    outcome = decide(book, request(controls_central_ac=False), provider="nest-labs")
    [decision] = outcome.decisions
    assert decision["outcome"] == "REJECTED" and decision["effective_date"] is None
    assert codes(outcome) == ["PROVIDER_NOT_AUTHORIZED", "METER_NOT_ELIGIBLE", "RATE_SCHEDULE_NOT_ELIGIBLE",
                              "CONFLICTING_PROGRAM", "CONFLICTING_PROGRAM", "NO_CENTRAL_AC"]
    messages = [f["message"] for f in decision["failures"]]
    assert messages[2].startswith("rate schedule TOU-D-PRIME is not one of D, D-CARE, D-FERA, TOU-D")
    assert "Critical Peak Pricing (CPP)" in messages[3] and "Summer Discount Plan (SDP)" in messages[4]
    assert book.periods == [] and outcome.claims == []


@pytest.mark.parametrize("code", ["BIP", "CBP_ELECT", "CPP", "THIRD_PARTY_DR", "DOMESTIC_MULTIPLE", "DMS_1", "DMS_2",
                                  "DMS_3", "MEDICAL_BASELINE_AC", "SDP"])
def test_each_excluded_program_disqualifies(code):
    assert codes(decide(AccountBook("SA-1", account(programs=[code])), request())) == ["CONFLICTING_PROGRAM"]


@pytest.mark.parametrize(("customer_class", "elrp", "eligible"), [
    ("RESIDENTIAL", "ELRP_A4", True), ("RESIDENTIAL", "ELRP_A5", True), ("RESIDENTIAL", "ELRP_A1", False),
    ("RESIDENTIAL", "ELRP_A2", False), ("BUSINESS", "ELRP_A1", True), ("BUSINESS", "ELRP_A4", False),
    ("BUSINESS", "ELRP_A3", False),
])
def test_elrp_sub_groups_that_may_dual_participate(customer_class, elrp, eligible):
    book = AccountBook("SA-1", account(customer_class=customer_class, rate_schedule="TOU-GS-1", programs=[elrp]))
    assert (decide(book, request()).decisions[0]["outcome"] == "ACCEPTED") is eligible


def test_closed_programs_unknown_programs_and_closed_accounts():
    assert codes(decide(AccountBook("SA-1", account()), request(program_id="sce-sep-legacy"))) == ["PROGRAM_NOT_OPEN"]
    assert codes(decide(AccountBook("SA-1", account()), request(program_id="nope"))) == ["PROGRAM_UNKNOWN"]
    closed = AccountBook("SA-1", account(service_end=date(2025, 6, 30)))
    assert codes(decide(closed, request())) == ["ACCOUNT_CLOSED"]


def test_ohm_hours_needs_an_active_data_sharing_authorization():
    book = AccountBook("SA-1", account())
    req = request(program_id="ohm-hours")
    assert codes(decide(book, req, provider="ohmconnect")) == ["DATA_SHARING_NOT_AUTHORIZED"]
    book.authorizations["AU-1"] = accounts.Authorization("AU-1", "ohmconnect", "ACTIVE", NOW, NOW)
    assert decide(book, request(request_id="R-2", program_id="ohm-hours"), provider="ohmconnect"
                  ).decisions[0]["outcome"] == "ACCEPTED"


# -- effective dates ---------------------------------------------------------------------------

def test_enrollment_takes_effect_on_the_third_business_day_across_the_fourth_of_july():
    # Requested Tuesday July 1, 2025: Wed 2, Thu 3, (Fri 4 is a holiday), Mon 7.
    outcome = decide(AccountBook("SA-1", account()), request())
    assert outcome.decisions[0]["effective_date"] == date(2025, 7, 7)


def test_business_days_skip_weekends_and_observed_holidays():
    assert add_business_days(date(2025, 11, 26), 3) == date(2025, 12, 2)  # Thanksgiving Thu 27, weekend
    assert add_business_days(date(2026, 7, 2), 1) == date(2026, 7, 3)  # Jul 4 2026 is a Saturday: Friday stays open
    assert add_business_days(date(2027, 7, 2), 1) == date(2027, 7, 6)  # Jul 4 2027 Sunday → Monday 5 observed
    assert add_business_days(date(2025, 12, 31), 3) == date(2026, 1, 6)


def test_disenrollment_ends_the_period_on_its_third_business_day():
    book = AccountBook("SA-1", account())
    decide(book, request())
    outcome = decide(book, request(request_id="R-2", action="DISENROLL", requested_at=NOW + timedelta(days=14)))
    assert outcome.decisions[0]["effective_date"] == date(2025, 7, 18)
    assert (book.periods[0].effective_to, book.periods[0].end_reason) == (date(2025, 7, 18), "DISENROLLED")


def test_only_the_enrolling_provider_can_disenroll():
    book = AccountBook("SA-1", account())
    decide(book, request())
    outcome = decide(book, request(request_id="R-2", action="DISENROLL"), provider="resideo")
    assert codes(outcome) == ["NOT_ENROLLED"]


def test_a_redelivered_request_is_never_decided_twice():
    book = AccountBook("SA-1", account())
    assert len(decide(book, request()).decisions) == 1
    assert decide(book, request()).decisions == []
    # The same request id from another provider is another request.
    assert len(decide(book, request(serial="T-2"), provider="resideo").decisions) == 1


def test_the_book_survives_its_storage_form():
    book = AccountBook("SA-1", account())
    decide(book, request())
    book.waiting.append({"provider_id": "resideo", "request": request(request_id="R-9"), "wait_until": NOW})
    restored = AccountBook.from_state("SA-1", decode_value(encode_value(book.to_state())))
    assert restored == book


# -- sign-up bonus (claims from the account's side) ---------------------------------------------

def claim_codes(outcome: Outcome) -> list[str]:
    [claim] = outcome.claims
    return [f["code"] for f in claim["failures"]]


def test_a_new_enrollment_claims_the_bonus_posted_at_its_bill_period_close():
    book = AccountBook("SA-1", account(bill_cycle_day=20))
    outcome = decide(book, request())
    [claim] = outcome.claims
    # Effective July 7; the bill period from June 20 closes July 19.
    assert (claim["kind"], claim["action"], claim["post_on"], claim["failures"]) == (
        "SIGNUP_BONUS", "CLAIM", date(2025, 7, 19), [])


def test_no_bonus_for_a_second_thermostat_or_a_utility_program_thermostat_or_a_re_enrollment():
    book = AccountBook("SA-1", account())
    decide(book, request())
    assert claim_codes(decide(book, request(request_id="R-2", serial="T-2"))) == ["BONUS_NOT_NEW_ENROLLMENT"]
    other = AccountBook("SA-2", account(service_account_id="SA-2"))
    assert claim_codes(decide(other, request(thermostat_source="UTILITY_PROGRAM"))) == [
        "BONUS_UTILITY_PROGRAM_THERMOSTAT"]
    again = AccountBook("SA-3", account(service_account_id="SA-3"))
    decide(again, request())
    decide(again, request(request_id="R-2", action="DISENROLL"))
    later = NOW + timedelta(days=30)
    assert claim_codes(decide(again, request(request_id="R-3", requested_at=later), now=later)) == [
        "BONUS_PREVIOUSLY_ENROLLED"]


def test_disenrolling_before_posting_cancels_the_bonus():
    book = AccountBook("SA-1", account())
    decide(book, request())
    outcome = decide(book, request(request_id="R-2", action="DISENROLL", requested_at=NOW + timedelta(days=2)))
    [cancel] = outcome.claims
    assert (cancel["action"], cancel["effective_date"]) == ("CANCEL", date(2025, 7, 3))


def test_closing_the_account_ends_enrollments_and_cancels_the_bonus():
    book = AccountBook("SA-1", account())
    decide(book, request())
    book.account = account(service_end=date(2025, 7, 20))
    outcome = Outcome()
    accounts.close_account(book, NOW, outcome)
    assert (book.periods[0].effective_to, book.periods[0].end_reason) == (date(2025, 7, 21), "ACCOUNT_CLOSED")
    assert [c["action"] for c in outcome.claims] == ["CANCEL"]


def test_the_legacy_rebate_needs_a_joint_gas_customer():
    legacy_day = datetime(2024, 5, 1, 17, tzinfo=timezone.utc)
    joint = AccountBook("SA-1", account(joint_gas_customer=True))
    outcome = decide(joint, request(program_id="sce-sep-legacy", requested_at=legacy_day), now=legacy_day)
    assert [(c["kind"], c["failures"]) for c in outcome.claims] == [("REBATE", [])]
    single = AccountBook("SA-2", account(service_account_id="SA-2"))
    outcome = decide(single, request(program_id="sce-sep-legacy", requested_at=legacy_day), now=legacy_day)
    assert claim_codes(outcome) == ["REBATE_NOT_JOINT_GAS_CUSTOMER"]


# -- removal and lock-out -------------------------------------------------------------------------

def test_removal_for_overrides_locks_re_enrollment_out_for_twelve_months():
    book = AccountBook("SA-1", account())
    decide(book, request())
    outcome = Outcome()
    accounts.remove(book, PROGRAMS["sce-sep-2025"], "OVERRIDES", None, date(2026, 1, 31), "overrode 6 of 6 events",
                    NOW, outcome)
    assert book.periods[0].end_reason == "REMOVED_OVERRIDES"
    later = datetime(2026, 6, 1, 17, tzinfo=timezone.utc)
    refused = decide(book, request(request_id="R-2", requested_at=later), now=later)
    assert codes(refused) == ["REENROLLMENT_LOCKED_OUT"]
    assert refused.decisions[0]["lockout_until"] == date(2027, 1, 30)
    assert "may re-enroll from 2027-01-31" in refused.decisions[0]["failures"][0]["message"]
    after = datetime(2027, 1, 31, 17, tzinfo=timezone.utc)
    assert decide(book, request(request_id="R-3", requested_at=after), now=after).decisions[0]["outcome"] == "ACCEPTED"


def test_removal_for_being_offline_has_no_lockout_and_ends_only_that_thermostat():
    book = AccountBook("SA-1", account())
    decide(book, request())
    decide(book, request(request_id="R-2", serial="T-2"))
    outcome = Outcome()
    accounts.remove(book, PROGRAMS["sce-sep-2025"], "OFFLINE", "T-1", date(2025, 8, 10), "offline 30 days", NOW, outcome)
    assert [(p.thermostat_serial, p.end_reason) for p in book.periods] == [("T-1", "REMOVED_OFFLINE"), ("T-2", None)]
    assert book.lockouts == []


# -- the incentive ledger: one fund, decided in log order ------------------------------------------

class MemoryStore(dict):
    def put(self, key, value):
        self[key] = value


def claim(account_id: str, serial: str, action="CLAIM", day=date(2025, 7, 7), failures=(), reason=None) -> dict:
    return {
        "claim_id": f"SIGNUP_BONUS/sce-sep-2025/{account_id}/energyhub/R-{account_id}", "kind": "SIGNUP_BONUS",
        "action": action, "program_id": "sce-sep-2025", "provider_id": "energyhub", "service_account_id": account_id,
        "thermostat_serial": serial, "effective_date": day, "post_on": date(2025, 7, 31),
        "failures": list(failures), "reason": reason, "claimed_at": NOW,
    }


def test_the_last_bonus_goes_to_the_first_claim_and_the_fund_never_goes_negative():
    store = MemoryStore({"fund/sce-sep-2025": "150.00"})
    ledger = IncentiveLedger(store, PROGRAMS)
    outcomes = [ledger.decide(claim(f"SA-{n}", f"T-{n}"), NOW) for n in range(3)]
    assert [o["outcome"] for o in outcomes] == ["GRANTED", "GRANTED", "DENIED"]
    assert [o["failures"][0]["code"] for o in outcomes[2:]] == ["BONUS_FUND_EXHAUSTED"]
    assert outcomes[1]["fund_remaining"] == Decimal("0.00") and outcomes[2]["amount"] == Decimal("0.00")


def test_a_serial_is_paid_once_ever_and_an_account_once():
    ledger = IncentiveLedger(MemoryStore(), PROGRAMS)
    assert ledger.decide(claim("SA-1", "T-1"), NOW)["outcome"] == "GRANTED"
    moved = claim("SA-2", "T-1")  # the same thermostat, sold to another household
    assert [f["code"] for f in ledger.decide(moved, NOW)["failures"]] == ["THERMOSTAT_ALREADY_PAID"]
    assert ledger.decide(claim("SA-1", "T-1"), NOW) is None  # a re-delivered claim


def test_cancel_before_posting_returns_the_money_reverse_within_ninety_days_after():
    store = MemoryStore({"fund/sce-sep-2025": "75.00"})
    ledger = IncentiveLedger(store, PROGRAMS)
    ledger.decide(claim("SA-1", "T-1"), NOW)
    cancelled = ledger.decide(claim("SA-1", "T-1", action="CANCEL", day=date(2025, 7, 10), reason="disenrolled"), NOW)
    assert (cancelled["outcome"], cancelled["amount"], cancelled["fund_remaining"]) == (
        "CANCELLED", Decimal("75.00"), Decimal("75.00"))
    ledger2 = IncentiveLedger(MemoryStore(), PROGRAMS)
    ledger2.decide(claim("SA-2", "T-2"), NOW)
    too_soon = ledger2.decide(claim("SA-2", "T-2", action="REVERSE", day=date(2025, 7, 20)), NOW)
    assert isinstance(too_soon, ClaimRefused) and too_soon.reason_code == "NOT_YET_POSTED"
    too_late = ledger2.decide(claim("SA-2", "T-2", action="REVERSE", day=date(2025, 10, 30)), NOW)
    assert too_late.reason_code == "REVERSAL_WINDOW_PASSED"
    reversed_ = ledger2.decide(claim("SA-2", "T-2", action="REVERSE", day=date(2025, 10, 29), reason="ESA unit"), NOW)
    assert (reversed_["outcome"], reversed_["amount"]) == ("REVERSED", Decimal("75.00"))
    assert ledger2.decide(claim("SA-2", "T-2", action="REVERSE", day=date(2025, 10, 29)), NOW) is None  # re-delivered
    again = claim("SA-2", "T-2", action="REVERSE", day=date(2025, 10, 29))
    again["claimed_at"] = NOW + timedelta(hours=1)  # an operator reversing it a second time
    refused = ledger2.decide(again, NOW)
    assert refused.reason_code == "ALREADY_REVERSED" and "as of 2025-10-29 (ESA unit)" in refused.reason


def test_a_claim_id_names_the_enrollment_and_a_reversal_claim_is_built_from_it():
    claim_id = accounts.ClaimId.parse("SIGNUP_BONUS/sce-sep-2025/SA-1/energyhub/R-7/b")
    assert claim_id == ("SIGNUP_BONUS", "sce-sep-2025", "SA-1", "energyhub", "R-7/b")
    assert str(claim_id) == "SIGNUP_BONUS/sce-sep-2025/SA-1/energyhub/R-7/b"
    for bad in ("SIGNUP_BONUS/sce-sep-2025/SA-1/energyhub", "GIFT/p/SA-1/energyhub/R-7", "SIGNUP_BONUS//SA-1/e/R"):
        with pytest.raises(ValueError, match="is not a claim id"):
            accounts.ClaimId.parse(bad)
    record = accounts.reversal(claim_id, "T-1", date(2025, 9, 1), "ESA unit", NOW)
    assert (record["action"], record["claim_id"], record["thermostat_serial"], record["reason"]) == (
        "REVERSE", str(claim_id), "T-1", "ESA unit")


def test_account_side_failures_deny_the_claim_without_touching_the_fund():
    store = MemoryStore()
    ledger = IncentiveLedger(store, PROGRAMS)
    failure = {"code": "BONUS_UTILITY_PROGRAM_THERMOSTAT", "message": "thermostat T-1 came from a utility program"}
    decision = ledger.decide(claim("SA-1", "T-1", failures=[failure]), NOW)
    assert decision["outcome"] == "DENIED" and decision["failures"] == [failure]
    assert decision["fund_remaining"] == Decimal("1500000.00")
