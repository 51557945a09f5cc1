"""Enrollment settings (environment variables ``GRIDFLEX_ENROLLMENT_*`` and ``GRIDFLEX_*``)."""

from __future__ import annotations

from pydantic import Field

from gridflex.settings import ServiceSettings


class EnrollmentSettings(ServiceSettings):
    web_port: int = Field(8102, validation_alias="GRIDFLEX_ENROLLMENT_WEB_PORT")
    unknown_account_wait_s: int = Field(
        86400, validation_alias="GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S",
        description="How long a request for an account the utility has not published waits before UNKNOWN_ACCOUNT",
    )
    clock_skew_s: int = Field(300, validation_alias="GRIDFLEX_ENROLLMENT_CLOCK_SKEW_S")
    authorization_pending_days: int = Field(
        7, validation_alias="GRIDFLEX_ENROLLMENT_AUTHORIZATION_PENDING_DAYS",
        description="A data-sharing authorization pending longer than this is flagged for re-authorization",
    )
