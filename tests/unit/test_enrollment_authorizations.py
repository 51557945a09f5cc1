"""Data-sharing authorizations (ohm-hours): status moves, the 7-day flag, refused personal data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gridflex import REPO_ROOT
from gridflex.programs import ProgramCatalogue
from services.enrollment.domain import authorizations
from services.enrollment.domain.accounts import AccountBook, Outcome, Period
from services.enrollment.domain.authorizations import AuthorizationRefused

PROGRAMS = ProgramCatalogue.load(REPO_ROOT / "programs")
NOW = datetime(2025, 7, 1, 17, tzinfo=timezone.utc)
LIMIT = timedelta(days=7)


def relayed(status: str, at: datetime = NOW, information: dict | None = None, authorization_id="AU-1") -> dict:
    return {
        "authorization_id": authorization_id, "service_account_id": "SA-1", "status": status,
        "requested_at": NOW - timedelta(days=1), "updated_at": at, "scopes": ["INTERVAL_USAGE"],
        "customer_information": information or {},
    }


def test_pending_then_active_then_revoked():
    book = AccountBook("SA-1")
    assert authorizations.apply(book, "ohmconnect", relayed("PENDING"), LIMIT, NOW) is True
    assert authorizations.apply(book, "ohmconnect", relayed("ACTIVE", NOW + timedelta(hours=1)), LIMIT, NOW) is True
    assert book.active_authorization("ohmconnect") is not None
    assert authorizations.apply(book, "ohmconnect", relayed("REVOKED", NOW + timedelta(hours=2)), LIMIT, NOW) is True
    assert book.active_authorization("ohmconnect") is None


def test_impossible_transitions_are_refused_and_stale_updates_change_nothing():
    book = AccountBook("SA-1")
    refused = authorizations.apply(book, "ohmconnect", relayed("REVOKED"), LIMIT, NOW)
    assert refused == AuthorizationRefused(
        "ILLEGAL_TRANSITION", "authorization AU-1 is unknown; it cannot start as REVOKED")
    authorizations.apply(book, "ohmconnect", relayed("ACTIVE"), LIMIT, NOW)
    authorizations.apply(book, "ohmconnect", relayed("EXPIRED", NOW + timedelta(hours=1)), LIMIT, NOW)
    again = authorizations.apply(book, "ohmconnect", relayed("ACTIVE", NOW + timedelta(hours=2)), LIMIT, NOW)
    assert again.reason_code == "ILLEGAL_TRANSITION"
    assert authorizations.apply(book, "ohmconnect", relayed("PENDING", NOW - timedelta(hours=1)), LIMIT, NOW) is False


def test_another_provider_cannot_touch_an_authorization():
    book = AccountBook("SA-1")
    authorizations.apply(book, "ohmconnect", relayed("PENDING"), LIMIT, NOW)
    refused = authorizations.apply(book, "energyhub", relayed("ACTIVE", NOW + timedelta(hours=1)), LIMIT, NOW)
    assert refused.reason_code == "AUTHORIZATION_OF_ANOTHER_PROVIDER"


def test_pending_over_seven_days_is_flagged_for_re_authorization():
    book = AccountBook("SA-1")
    authorizations.apply(book, "ohmconnect", relayed("PENDING"), LIMIT, NOW)
    assert not authorizations.flag_overdue(book, LIMIT, NOW + timedelta(days=5))
    assert authorizations.flag_overdue(book, LIMIT, NOW + timedelta(days=7))
    assert book.authorizations["AU-1"].reauthorization_required


@pytest.mark.parametrize(("information", "code"), [
    ({"password": "hunter2"}, "UTILITY_CREDENTIAL_REFUSED"),
    ({"sce_username": "jdoe"}, "UTILITY_CREDENTIAL_REFUSED"),
    ({"ssn": "x"}, "FORBIDDEN_PERSONAL_DATA"),
    ({"card_number": "x"}, "FORBIDDEN_PERSONAL_DATA"),
    ({"note": "my ssn is 123-45-6789"}, "FORBIDDEN_PERSONAL_DATA"),
    ({"note": "pay with 4111 1111 1111 1111"}, "FORBIDDEN_PERSONAL_DATA"),
])
def test_credentials_social_security_and_payment_data_are_refused(information, code):
    assert authorizations.screen(relayed("PENDING", information=information)).reason_code == code


def test_what_the_utility_may_share_passes():
    shared = {"meter_id": "M-889911", "meter_interval_seconds": "900", "other_programs": "ESA",
              "gas_account": "yes", "service_account_number": "3-049-1234-56"}
    assert authorizations.screen(relayed("ACTIVE", information=shared)) is None


def test_revoking_ends_the_providers_data_sharing_enrollments_only():
    book = AccountBook("SA-1")
    authorizations.apply(book, "ohmconnect", relayed("ACTIVE"), LIMIT, NOW)
    book.periods = [Period("ohm-hours", "ohmconnect", "T-1", "R-1", NOW.date()),
                    Period("sce-sep-2025", "energyhub", "T-2", "R-2", NOW.date())]
    authorizations.apply(book, "ohmconnect", relayed("REVOKED", NOW + timedelta(days=3)), LIMIT, NOW)
    outcome = Outcome()
    authorizations.end_unauthorized(book, PROGRAMS, "ohmconnect", (NOW + timedelta(days=3)).date(), outcome)
    assert [(p.program_id, p.end_reason) for p in book.periods] == [
        ("ohm-hours", "AUTHORIZATION_ENDED"), ("sce-sep-2025", None)]


def test_a_refused_record_is_kept_without_its_forbidden_fields():
    record = {"customer_information": {"meter_id": "M-1", "ssn": "123-45-6789", "note": "card 4111 1111 1111 1111",
                                       "sce_password": "hunter2", "gas_account": "yes"}}
    assert authorizations.redacted(record)["customer_information"] == {"meter_id": "M-1", "gas_account": "yes"}
