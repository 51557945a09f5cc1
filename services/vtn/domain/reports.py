"""VEN reports → the provider's telemetry: ``ThermostatState`` and ``DispatchAck`` records.

Each interval of a thermostat resource (resourceName = thermostat serial) that carries
``OPERATING_STATE`` becomes one ThermostatState observed at the interval's start; one that carries
the private ``X_GRIDFLEX_DISPATCH_ACK`` becomes one DispatchAck for the report's event. ``SETPOINT``
(the cooling setpoint, °F unless the report's payload descriptor says CELSIUS),
``X_GRIDFLEX_INDOOR_TEMPERATURE`` (same units) and ``X_GRIDFLEX_HVAC_MODE`` complete the state.
Other payloads (USAGE, …) are kept with the report only: gridflex takes usage from the utility's
meters, not from providers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.vtn.domain import Invalid
from services.vtn.domain.timing import TimingError, parse_instant

OPERATING_STATE = "OPERATING_STATE"
SETPOINT = "SETPOINT"
INDOOR = "X_GRIDFLEX_INDOOR_TEMPERATURE"
HVAC_MODE = "X_GRIDFLEX_HVAC_MODE"
ACK = "X_GRIDFLEX_DISPATCH_ACK"
AGGREGATED = "AGGREGATED_REPORT"
HVAC_MODES = ("OFF", "COOL", "HEAT", "AUTO", "ECO")
ACK_STATUSES = ("ACCEPTED", "REJECTED", "OPTED_OUT", "FAILED")
# (online, override) of each operating state a thermostat can be in (enumerations, Table 4).
STATES = {
    "NORMAL": (True, False), "IDLE_NORMAL": (True, False), "RUNNING_NORMAL": (True, False),
    "RUNNING_CURTAILED": (True, False), "IDLE_CURTAILED": (True, False),
    "RUNNING_HEIGHTENED": (True, False), "IDLE_HEIGHTENED": (True, False),
    "RUNNING_OPTED_OUT": (True, True), "IDLE_OPTED_OUT": (True, True),
    "ERROR": (False, False), "SGD_ERROR_CONDITION": (False, False),
}
TEMPERATURE_UNITS = ("FAHRENHEIT", "CELSIUS")

PAYLOAD_DESCRIPTORS = [
    {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": OPERATING_STATE, "readingType": None, "units": None,
     "accuracy": None, "confidence": None},
    {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": SETPOINT, "readingType": "DIRECT_READ",
     "units": "FAHRENHEIT", "accuracy": None, "confidence": None},
    {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": INDOOR, "readingType": "DIRECT_READ",
     "units": "FAHRENHEIT", "accuracy": None, "confidence": None},
    {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": HVAC_MODE, "readingType": None, "units": None,
     "accuracy": None, "confidence": None},
    {"objectType": "REPORT_PAYLOAD_DESCRIPTOR", "payloadType": ACK, "readingType": None, "units": None,
     "accuracy": None, "confidence": None},
]


@dataclass(frozen=True)
class Telemetry:
    """The records one report becomes, on the reporting provider's own topics."""

    states: list[dict]  # ThermostatState, keyed by thermostat_serial
    acks: list[dict]  # DispatchAck, keyed by thermostat_serial


def report_telemetry(body: dict, event_id: str, thermostats: dict[str, str]) -> Telemetry:
    """The ThermostatState and DispatchAck records of a reportRequest (valid against the OpenAPI
    schema). ``thermostats``: serial → service account of the reporting provider's enrolled
    thermostats; a resource that is not one of them is refused. Raises :class:`Invalid`."""
    problems: list[str] = []
    units = _units(body.get("payloadDescriptors"), problems)
    states, acks = [], []
    for r, resource in enumerate(body.get("resources") or []):
        name = resource["resourceName"]
        if name == AGGREGATED:
            continue  # an aggregate of several thermostats: kept with the report, no device record
        account = thermostats.get(name)
        if account is None:
            problems.append(f"resources[{r}]: {name!r} is not a thermostat you have enrolled")
            continue
        default_start = (resource.get("intervalPeriod") or {}).get("start")
        for i, interval in enumerate(resource.get("intervals") or []):
            where = f"resources[{r}].intervals[{i}]"
            values = _payloads(interval, where, problems)
            if values is None or not ({OPERATING_STATE, ACK} & values.keys()):
                if values and ({SETPOINT, INDOOR, HVAC_MODE} & values.keys()):
                    problems.append(f"{where}: {SETPOINT}, {INDOOR} and {HVAC_MODE} describe a thermostat's "
                                    f"state; give its {OPERATING_STATE} in the same interval")
                continue
            start_text = (interval.get("intervalPeriod") or {}).get("start") or default_start
            try:
                at = parse_instant(start_text, f"{where}.intervalPeriod.start")
            except TimingError as exc:
                problems.append(f"{exc} (the instant the thermostat was observed)")
                continue
            if OPERATING_STATE in values:
                state = _state(values, name, account, event_id, at, units, where, problems)
                if state is not None:
                    states.append(state)
            if ACK in values:
                if values[ACK] not in ACK_STATUSES:
                    problems.append(f"{where}: {ACK} {values[ACK]!r} is not one of {', '.join(ACK_STATUSES)}")
                else:
                    acks.append({"event_id": event_id, "thermostat_serial": name, "status": values[ACK], "at": at})
    if problems:
        raise Invalid(problems)
    return Telemetry(states, acks)


def _units(descriptors: list | None, problems: list[str]) -> dict[str, str]:
    units = {SETPOINT: "FAHRENHEIT", INDOOR: "FAHRENHEIT"}
    for descriptor in descriptors or []:
        kind = descriptor.get("payloadType")
        if kind in units and descriptor.get("units") is not None:
            if descriptor["units"] not in TEMPERATURE_UNITS:
                problems.append(f"payloadDescriptors: {kind} is a temperature in FAHRENHEIT or CELSIUS, "
                                f"not {descriptor['units']!r}")
            else:
                units[kind] = descriptor["units"]
    return units


def _payloads(interval: dict, where: str, problems: list[str]) -> dict | None:
    values = {}
    for payload in interval.get("payloads") or []:
        kind = payload["type"]
        if kind in (OPERATING_STATE, SETPOINT, INDOOR, HVAC_MODE, ACK):
            if len(payload["values"]) != 1:
                problems.append(f"{where}: {kind} takes exactly one value")
                return None
            if kind in values:
                problems.append(f"{where}: {kind} is given twice")
                return None
            values[kind] = payload["values"][0]
    return values


def _temperature(value: object, unit: str, kind: str, where: str, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 200:
        problems.append(f"{where}: {kind} {value!r} is not a temperature in {unit}")
        return None
    return round(value * 9 / 5 + 32, 2) if unit == "CELSIUS" else float(value)


def _state(values: dict, serial: str, account: str, event_id: str, at: datetime, units: dict, where: str,
           problems: list[str]) -> dict | None:
    found = len(problems)
    operating = values[OPERATING_STATE]
    if operating not in STATES:
        problems.append(f"{where}: {OPERATING_STATE} {operating!r} is not a thermostat's state "
                        f"({', '.join(STATES)})")
    mode = values.get(HVAC_MODE)
    if mode not in HVAC_MODES:
        problems.append(f"{where}: {HVAC_MODE} must be one of {', '.join(HVAC_MODES)} with {OPERATING_STATE} "
                        f"(got {mode!r})")
    setpoint = indoor = None
    if SETPOINT in values:
        setpoint = _temperature(values[SETPOINT], units[SETPOINT], SETPOINT, where, problems)
    if INDOOR in values:
        indoor = _temperature(values[INDOOR], units[INDOOR], INDOOR, where, problems)
    if len(problems) > found:
        return None
    online, override = STATES[operating]
    return {
        "thermostat_serial": serial, "service_account_id": account, "observed_at": at, "online": online,
        "hvac_mode": mode, "cool_setpoint_f": setpoint, "indoor_temp_f": indoor, "event_id": event_id,
        "override": override,
    }
