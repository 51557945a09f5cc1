"""Baseline settings (environment variables ``GRIDFLEX_BASELINE_*`` and ``GRIDFLEX_*``)."""

from __future__ import annotations

from pydantic import Field

from gridflex.settings import ServiceSettings


class BaselineSettings(ServiceSettings):
    web_port: int = Field(8104, validation_alias="GRIDFLEX_BASELINE_WEB_PORT")
    sweep_slice: int = Field(
        5_000, gt=0, validation_alias="GRIDFLEX_BASELINE_SWEEP_SLICE",
        description="Most accounts one partition evaluates per batch when an event ends (or reaches its data "
                    "deadline): bounds a batch and keeps the worker answering while a million are evaluated",
    )
    usage_retention_days: int = Field(
        45, gt=0, validation_alias="GRIDFLEX_BASELINE_USAGE_RETENTION_DAYS",
        description="Local days of interval usage kept per account (at least every program's search_days); "
                    "older days are kept only while an open result reads them",
    )
