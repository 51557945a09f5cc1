"""What every HTTP API of gridflex shares: bearer tokens, JSON errors with a reason, routes on
the service's Faust web server, and dependencies that are down answered with 503."""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

import structlog
from aiohttp.web import Request, Response, json_response
from aiokafka.errors import KafkaError
from faust.web import View

from gridflex.clock import ClockNotStarted
from gridflex.db import TRANSIENT_ERRORS
from gridflex.metrics import error

log = structlog.get_logger(__name__)

Handler = Callable[..., Awaitable[Response]]


class Refused(Exception):
    """A request answered with an error: carries the response."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def error_response(status: int, error: str, reason: str, headers: dict | None = None) -> Response:
    return json_response({"error": error, "reason": reason}, status=status, headers=headers)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized(token: str | None) -> Refused:
    challenge = 'Bearer realm="gridflex"' + (', error="invalid_token"' if token else "")
    return Refused(error_response(401, "unauthorized", "a valid bearer token is required",
                                  headers={"WWW-Authenticate": challenge}))


def answering(handler: Handler, errors: dict[type[Exception], Callable[[Any], Response]] | None = None) -> Handler:
    """Turns refusals, the API's own input errors (``errors``: exception type → response) and
    unavailable dependencies into responses."""
    handled = tuple(errors or ())

    @functools.wraps(handler)
    async def answer(view: View, request: Request, **match: str) -> Response:
        try:
            return await handler(request, **match)
        except Refused as refused:
            return refused.response
        except handled as invalid:
            return next(respond for kind, respond in errors.items() if isinstance(invalid, kind))(invalid)
        except (*TRANSIENT_ERRORS, KafkaError, ClockNotStarted) as exc:
            error("dependency")
            log.warning("request failed: a dependency is unavailable", route=handler.__name__, error=type(exc).__name__)
            return error_response(503, "unavailable", "the service cannot answer now; try again shortly",
                                  headers={"Retry-After": "5"})

    return answer


def add_route(app: Any, method: str, path: str, handler: Handler, errors: dict | None = None) -> None:
    """Serve ``handler`` for ``method`` on ``path`` (aiohttp's ``{name}`` match syntax)."""
    app.page(path, name=handler.__name__)(type(handler.__name__, (View,), {method: answering(handler, errors)}))
