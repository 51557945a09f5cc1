"""Telemetry ingestion settings (environment variables ``GRIDFLEX_TELEMETRY_*`` and ``GRIDFLEX_*``)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import Field

from gridflex.settings import ServiceSettings
from services.telemetry.domain import TelemetryLimits


class TelemetrySettings(ServiceSettings):
    web_port: int = Field(8101, validation_alias="GRIDFLEX_TELEMETRY_WEB_PORT")
    max_demand_kw: Decimal = Field(Decimal("500"), validation_alias="GRIDFLEX_TELEMETRY_MAX_DEMAND_KW")
    clock_skew_s: int = Field(300, validation_alias="GRIDFLEX_TELEMETRY_CLOCK_SKEW_S")
    revision_days: int = Field(60, validation_alias="GRIDFLEX_TELEMETRY_REVISION_DAYS")

    def limits(self) -> TelemetryLimits:
        return TelemetryLimits(
            max_demand_kw=self.max_demand_kw, clock_skew=timedelta(seconds=self.clock_skew_s),
            revision_days=self.revision_days,
        )
