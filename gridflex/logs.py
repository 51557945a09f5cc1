"""Structured logs: one JSON object per line, with the service and any bound domain ids.

Bind ``event_id``, ``service_account_id`` or ``provider_id`` with
``structlog.contextvars.bound_contextvars`` and every line logged inside carries them.
Never log secrets or personal data: log ids, not names, addresses or credentials.
"""

from __future__ import annotations

import logging
import logging.config

import structlog


_process = {"service": None}


def add_service(logger, method_name: str, event_dict: dict) -> dict:
    """Every line names its service, also those of library threads that never saw the context."""
    if _process["service"]:
        event_dict.setdefault("service", _process["service"])
    return event_dict


SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    add_service,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> dict:
    """Route structlog and the standard library (Faust, aiokafka) through one renderer.

    Returns the ``logging.config.dictConfig`` document that the Faust worker applies.
    """
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _process["service"] = service
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": "gridflex.logs.stream_handler", "fmt": fmt}},
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
    logging.config.dictConfig(config)
    return config


def stream_handler(fmt: str = "json") -> logging.Handler:
    """A stderr handler rendering every record as JSON (or for a console)."""
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    return handler
