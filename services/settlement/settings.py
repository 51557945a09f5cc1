"""Settlement settings (environment variables ``GRIDFLEX_SETTLEMENT_*`` and ``GRIDFLEX_*``)."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from gridflex.settings import ServiceSettings


class SettlementSettings(ServiceSettings):
    web_port: int = Field(8105, validation_alias="GRIDFLEX_SETTLEMENT_WEB_PORT")
    first_open_day: date | None = Field(
        None, validation_alias="GRIDFLEX_SETTLEMENT_FIRST_OPEN_DAY",
        description="On a new ledger, the first local day whose bill periods settlement closes (default: the "
                    "day it first runs); earlier periods are never closed, so never credited",
    )
