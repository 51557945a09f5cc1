"""Who may do what: OAuth scopes (openadr3.yaml's securitySchemes), object privacy (Definition.md,
"Object Privacy"), and pagination.

A business-logic (BL) client reads everything. A VEN client is one provider: its ven object, its
thermostats (resources), its reports and subscriptions, and the programs and events addressed to
it. A VEN is granted one target, its provider id; an object without targets is for every VEN.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.vtn.domain import Invalid

ALL_SCOPES = ("read_all", "read_targets", "read_ven_objects", "write_programs", "write_events", "write_reports",
              "write_subscriptions", "write_vens")
# Programs come from the catalogue and VENs from the provider registry: nobody writes them here.
BL_SCOPES = ("read_all", "write_events", "write_subscriptions")
VEN_SCOPES = ("read_targets", "read_ven_objects", "write_reports", "write_subscriptions")
ROLE_SCOPES = {"BL": BL_SCOPES, "VEN": VEN_SCOPES}
DEFAULT_LIMIT = 50
MAX_LIMIT = 50


class ScopeRefused(ValueError):
    """The token lacks the scope an operation needs."""


@dataclass(frozen=True)
class Caller:
    client_id: str
    role: str  # BL or VEN
    scopes: frozenset[str]

    @property
    def provider_id(self) -> str | None:
        """A VEN client is its provider."""
        return self.client_id if self.role == "VEN" else None

    @property
    def granted_targets(self) -> tuple[str, ...]:
        return (self.client_id,) if self.role == "VEN" else ()

    def require(self, scope: str) -> None:
        """Reads are allowed by their own scope or by read_all; writes only by their own."""
        if scope in self.scopes or (scope.startswith("read_") and "read_all" in self.scopes):
            return
        raise ScopeRefused(f"this operation needs the {scope} scope; the token has {' '.join(sorted(self.scopes))}")

    def owns(self, client_id: str) -> bool:
        """Whether the caller may see an object a client created (ven, resource, report, subscription)."""
        return self.role == "BL" or client_id == self.client_id


def requested_scopes(role: str, requested: str | None) -> tuple[str, ...]:
    """The scopes a token gets: the role's, or the subset asked for (RFC 6749 §3.3)."""
    allowed = ROLE_SCOPES[role]
    if requested is None or not requested.strip():
        return allowed
    asked = requested.split()
    refused = [scope for scope in asked if scope not in allowed]
    if refused:
        raise Invalid([f"scope {' '.join(refused)} is not granted to {role} clients (they may ask for "
                       f"{' '.join(allowed)})"])
    return tuple(dict.fromkeys(asked))


def visible_targets(caller: Caller, object_targets: list[str] | tuple[str, ...] | None,
                    query_targets: list[str]) -> tuple[bool, tuple[str, ...] | None]:
    """Whether a targeted object (program, event) is visible, and the targets to show (None: all).

    An untargeted object is for everyone. With a ``targets`` query, a targeted object must carry
    one of them. A VEN's query is narrowed to its granted targets (its provider id; no query
    means those), and it sees only those targets on the object (target hiding)."""
    targets = tuple(object_targets or ())
    if caller.role == "BL":
        return (not query_targets or not targets or bool(set(query_targets) & set(targets))), None
    wanted = set(caller.granted_targets) & set(query_targets) if query_targets else set(caller.granted_targets)
    if query_targets and not wanted:
        return False, ()
    if not targets:
        return True, ()
    shown = tuple(t for t in targets if t in wanted)
    return bool(shown), shown


def page(query: dict[str, str]) -> tuple[int, int]:
    """(skip, limit) from the query, as the spec bounds them."""
    problems = []
    values = {}
    for name, default, ceiling in (("skip", 0, None), ("limit", DEFAULT_LIMIT, MAX_LIMIT)):
        text = query.get(name)
        if text is None:
            values[name] = default
            continue
        try:
            value = int(text)
        except ValueError:
            problems.append(f"{name} {text!r} is not an integer")
            continue
        if value < 0 or (ceiling is not None and value > ceiling):
            problems.append(f"{name} {value} must be between 0 and {ceiling}" if ceiling is not None
                            else f"{name} {value} must be 0 or more")
        elif value > 2**31 - 1:
            problems.append(f"{name} {value} is too large")
        values[name] = value
    if problems:
        raise Invalid(problems)
    return values["skip"], values["limit"]
