"""Dispatch settings (environment variables ``GRIDFLEX_DISPATCH_*`` and ``GRIDFLEX_*``)."""

from __future__ import annotations

from pydantic import Field

from gridflex.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    web_port: int = Field(8103, validation_alias="GRIDFLEX_DISPATCH_WEB_PORT")
    fanout_slice: int = Field(
        20_000, gt=0, validation_alias="GRIDFLEX_DISPATCH_FANOUT_SLICE",
        description="Most thermostats one partition instructs per batch while fanning out an event: "
                    "bounds a batch's memory and keeps the worker answering while a million are sent",
    )
    sent_chunk: int = Field(
        5_000, gt=0, validation_alias="GRIDFLEX_DISPATCH_SENT_CHUNK",
        description="Thermostats per stored record of who received an event (one changelog record each)",
    )
    coverage_every_s: float = Field(
        5.0, gt=0, validation_alias="GRIDFLEX_DISPATCH_COVERAGE_EVERY_S",
        description="How often acknowledgment coverage is recomputed from the projection",
    )
