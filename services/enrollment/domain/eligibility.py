"""Who may enroll in a program: every rule of the program file, each failure a code and a sentence.

Pure functions over the program (gridflex.programs) and plain records; a decision lists every
rule that failed, never only the first.
"""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

from gridflex.programs import Program


class RuleFailure(NamedTuple):
    code: str
    message: str

    def to_record(self) -> dict:
        return {"code": self.code, "message": self.message}


def _listed(values) -> str:
    return ", ".join(sorted(values))


def program_failures(program: Program | None, program_id: str, provider_id: str, day: date) -> list[RuleFailure]:
    """The program exists, is open on the request day and authorizes the provider."""
    if program is None:
        return [RuleFailure("PROGRAM_UNKNOWN", f"program {program_id!r} is not in the program catalogue")]
    failures = []
    if not program.open_on(day):
        until = f" to {program.effective_to}" if program.effective_to else ""
        failures.append(RuleFailure(
            "PROGRAM_NOT_OPEN", f"{program.id} runs from {program.effective_from}{until}; the request is dated {day}"
        ))
    if provider_id not in program.providers:
        failures.append(RuleFailure(
            "PROVIDER_NOT_AUTHORIZED",
            f"provider {provider_id} is not one of {program.id}'s providers ({_listed(program.providers)})",
        ))
    return failures


def account_failures(program: Program, account: dict, day: date) -> list[RuleFailure]:
    """The utility's facts about the account against the program's eligibility rules."""
    rules = program.eligibility
    failures = []
    service_end = account["service_end"]
    if service_end is not None and service_end < day:
        failures.append(RuleFailure("ACCOUNT_CLOSED", f"service on the account ended on {service_end}"))
    customer_class = account["customer_class"]
    if customer_class not in rules.customer_classes:  # CustomerClass is a str enum
        failures.append(RuleFailure(
            "CUSTOMER_CLASS_NOT_ELIGIBLE",
            f"customer class {customer_class} is not one of {_listed(c.value for c in rules.customer_classes)}",
        ))
    if rules.meter_types is not None and account["meter_type"] not in rules.meter_types:
        failures.append(RuleFailure(
            "METER_NOT_ELIGIBLE", f"meter type {account['meter_type']} is not one of {_listed(rules.meter_types)}"
        ))
    if rules.rate_schedules is not None and account["rate_schedule"] not in rules.rate_schedules:
        failures.append(RuleFailure(
            "RATE_SCHEDULE_NOT_ELIGIBLE",
            f"rate schedule {account['rate_schedule']} is not one of {_listed(rules.rate_schedules)}",
        ))
    allowed = rules.dual_participation.get(customer_class, frozenset())
    for code in sorted(account["programs"]):
        if code in rules.excluded_programs and code not in allowed:
            failures.append(RuleFailure(
                "CONFLICTING_PROGRAM",
                f"the account is enrolled in {rules.excluded_programs[code]} ({code}), which excludes {program.id}",
            ))
    return failures


def thermostat_failures(program: Program, request: dict) -> list[RuleFailure]:
    rules = program.eligibility
    failures = []
    if rules.requires_central_ac and not request["controls_central_ac"]:
        failures.append(RuleFailure(
            "NO_CENTRAL_AC", f"thermostat {request['thermostat_serial']} does not control a working central A/C"
        ))
    if request["thermostat_source"] not in rules.thermostat_sources:
        failures.append(RuleFailure(
            "THERMOSTAT_SOURCE_NOT_ELIGIBLE",
            f"thermostats from {request['thermostat_source']} are not one of {_listed(rules.thermostat_sources)}",
        ))
    return failures
