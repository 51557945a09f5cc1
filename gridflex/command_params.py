"""Argument types of the operator command, checked by click before a command runs (a bad value is
a usage error naming the argument)."""

from __future__ import annotations

from datetime import datetime

import click

from gridflex.topics import InvalidProviderId, validate_provider_id


class ProviderId(click.ParamType):
    """A provider id as topic names carry it (``partner.<provider_id>.…``)."""

    name = "provider_id"

    def convert(self, value, param, ctx):
        try:
            return validate_provider_id(value)
        except InvalidProviderId as exc:
            self.fail(str(exc), param, ctx)


class Instant(click.ParamType):
    """An ISO 8601 instant; without an offset it is Pacific wall-clock time (the programs' zone)."""

    name = "instant"

    def convert(self, value, param, ctx):
        from gridflex.calendar import LOCAL_ZONE

        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2025-08-14T16:00 or 2025-08-14T23:00Z", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=LOCAL_ZONE)
