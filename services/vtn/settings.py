"""VTN settings (environment variables ``GRIDFLEX_VTN_*`` and ``GRIDFLEX_*``)."""

from __future__ import annotations

from pydantic import Field

from gridflex.settings import ServiceSettings


class VtnSettings(ServiceSettings):
    web_port: int = Field(8106, validation_alias="GRIDFLEX_VTN_WEB_PORT")
    public_url: str = Field(
        "", validation_alias="GRIDFLEX_VTN_PUBLIC_URL",
        description="The VTN's base URL as clients reach it (behind a proxy); empty: the request's own host",
    )
    token_ttl_s: int = Field(900, gt=0, validation_alias="GRIDFLEX_VTN_TOKEN_TTL_S",
                             description="Lifetime of an access token")
    decision_wait_s: float = Field(
        10.0, gt=0, validation_alias="GRIDFLEX_VTN_DECISION_WAIT_S",
        description="How long an event write waits for dispatch's decision before answering 503",
    )
    callback_attempts: int = Field(6, gt=0, validation_alias="GRIDFLEX_VTN_CALLBACK_ATTEMPTS",
                                   description="Webhook attempts before the notification is dead-lettered")
    callback_backoff_s: float = Field(2.0, gt=0, validation_alias="GRIDFLEX_VTN_CALLBACK_BACKOFF_S",
                                      description="Wait before the 2nd attempt; it doubles after each failure")
    callback_backoff_max_s: float = Field(600.0, gt=0, validation_alias="GRIDFLEX_VTN_CALLBACK_BACKOFF_MAX_S")
    callback_timeout_s: float = Field(5.0, gt=0, validation_alias="GRIDFLEX_VTN_CALLBACK_TIMEOUT_S")
    callback_poll_s: float = Field(0.5, gt=0, validation_alias="GRIDFLEX_VTN_CALLBACK_POLL_S",
                                   description="How often the webhook outbox is looked at")
