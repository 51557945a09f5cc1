"""One realistic value per Avro record: the round-trip test vectors (see tests/unit/test_codec.py)."""

from datetime import date, datetime, timezone
from decimal import Decimal


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


VECTORS = {
    "gridflex.utility.CustomerAccount": {
        "service_account_id": "SA-100234", "customer_class": "RESIDENTIAL", "rate_schedule": "TOU-D",
        "meter_type": "SMARTCONNECT", "service_start": date(2019, 4, 2), "service_end": None,
        "net_metering_since": date(2023, 6, 1), "bill_cycle_day": 17, "programs": ["ELRP_A4"],
        "joint_gas_customer": True, "updated_at": utc(2025, 5, 1, 12, 0),
    },
    "gridflex.utility.MeterRead": {
        "service_account_id": "SA-100234", "meter_id": "M-88123", "interval_start": utc(2025, 7, 15, 23, 0),
        "interval_seconds": 3600, "value": Decimal("1432.000000"), "unit": "WH", "quality": "ACTUAL",
        "revision": 0, "read_at": utc(2025, 7, 16, 6, 0), "source": "AMI",
    },
    "gridflex.utility.EnergyEventRequest": {
        "event_id": "EV-2025-0715-A", "program_id": "sce-sep-2025", "action": "SCHEDULE", "reason": "GRID_STRESS",
        "start": utc(2025, 7, 15, 23, 0), "end": utc(2025, 7, 16, 2, 0), "issued_at": utc(2025, 7, 15, 16, 0),
        "setpoint_offset_f": 4, "precool": True, "targets": ["energyhub", "resideo"],
    },
    "gridflex.partner.EnrollmentRequest": {
        "request_id": "REQ-7781", "program_id": "sce-sep-2025", "action": "ENROLL", "service_account_id": "SA-100234",
        "thermostat_serial": "EH-00F1-22A9", "thermostat_model": "ecobee3 lite", "controls_central_ac": True,
        "thermostat_source": "RETAIL", "requested_at": utc(2025, 5, 2, 17, 30),
    },
    "gridflex.partner.ThermostatState": {
        "thermostat_serial": "EH-00F1-22A9", "service_account_id": "SA-100234", "observed_at": utc(2025, 7, 15, 23, 5),
        "online": True, "hvac_mode": "COOL", "cool_setpoint_f": 78.0, "indoor_temp_f": 76.5,
        "event_id": "EV-2025-0715-A", "override": False,
    },
    "gridflex.partner.DispatchAck": {
        "event_id": "EV-2025-0715-A", "thermostat_serial": "EH-00F1-22A9", "status": "ACCEPTED",
        "at": utc(2025, 7, 15, 16, 1),
    },
    "gridflex.partner.DispatchInstruction": {
        "event_id": "EV-2025-0715-A", "program_id": "sce-sep-2025", "action": "SCHEDULE",
        "thermostat_serial": "EH-00F1-22A9", "service_account_id": "SA-100234", "precool_start": utc(2025, 7, 15, 22, 0),
        "precool_offset_f": -2, "start": utc(2025, 7, 15, 23, 0), "end": utc(2025, 7, 16, 2, 0),
        "setpoint_offset_f": 4, "issued_at": utc(2025, 7, 15, 16, 0),
    },
    "gridflex.ops.DeadLetter": {
        "service": "telemetry", "source_topic": "utility.meter-reads.v1", "source_partition": 2, "source_offset": 81723,
        "key": b"SA-100234", "value": b"\xc3\x01garbage", "reason_code": "UNDECODABLE",
        "reason": "corrupt gridflex.utility.MeterRead body", "failed_at": utc(2025, 7, 16, 6, 0, 1),
    },
    "gridflex.ops.ClockTick": {"now": utc(2025, 7, 15, 23, 0)},
    "gridflex.results.EventPerformance": {
        "event_id": "EV-2025-0715-A", "program_id": "sce-sep-legacy", "service_account_id": "SA-100234",
        "method": "csrl-3-of-5", "baseline_kwh": Decimal("4.733333333"), "actual_kwh": Decimal("2.100000000"),
        "reduction_kwh": Decimal("2.633333333"),
        "candidate_days": [date(2025, 7, 8), date(2025, 7, 9), date(2025, 7, 10), date(2025, 7, 11), date(2025, 7, 14)],
        "status": "SETTLEABLE", "reason": None, "revision": 0,
    },
    "gridflex.telemetry.MeterInterval": {
        "service_account_id": "SA-100234", "meter_id": "M-88123", "interval_start": utc(2025, 7, 15, 23, 0),
        "interval_seconds": 3600, "local_date": date(2025, 7, 15), "kwh": Decimal("1.432000000"), "quality": "ACTUAL",
        "revision": 1, "supersedes_revision": 0, "read_at": utc(2025, 7, 16, 6, 0),
    },
    "gridflex.telemetry.DeviceStatus": {
        "provider_id": "energyhub", "thermostat_serial": "EH-00F1-22A9", "service_account_id": "SA-100234",
        "observed_at": utc(2025, 7, 15, 23, 20), "change": "OVERRIDE", "online": True, "override": True,
        "event_id": "EV-2025-0715-A", "hvac_mode": "COOL", "cool_setpoint_f": 74.0, "indoor_temp_f": 77.0,
    },
    "gridflex.partner.EnrollmentDecision": {
        "request_id": "REQ-7781", "provider_id": "energyhub", "program_id": "sce-sep-2025", "action": "ENROLL",
        "service_account_id": "SA-100234", "thermostat_serial": "EH-00F1-22A9", "outcome": "REJECTED",
        "effective_date": None,
        "failures": [{"code": "RATE_SCHEDULE_NOT_ELIGIBLE", "message": "rate schedule TOU-D-PRIME is not one of D"}],
        "lockout_until": None, "requested_at": utc(2025, 7, 1, 17, 0), "decided_at": utc(2025, 7, 1, 17, 0, 1),
    },
    "gridflex.partner.DataSharingAuthorization": {
        "authorization_id": "AU-5521", "service_account_id": "SA-100234", "status": "ACTIVE",
        "requested_at": utc(2025, 6, 28, 19, 0), "updated_at": utc(2025, 7, 1, 9, 0),
        "scopes": ["INTERVAL_USAGE", "BILLING"], "customer_information": {"meter_interval_seconds": "900"},
    },
    "gridflex.enrollment.AccountEnrollments": {
        "service_account_id": "SA-100234",
        "enrollments": [{"program_id": "sce-sep-2025", "provider_id": "energyhub", "thermostat_serial": "EH-00F1-22A9",
                         "request_id": "REQ-7780", "effective_from": date(2025, 7, 7), "effective_to": None,
                         "end_reason": None}],
        "lockouts": [{"program_id": "sce-sep-2025", "until": date(2027, 1, 30), "reason": "removed on 2026-01-31"}],
        "authorizations": [{"authorization_id": "AU-5521", "provider_id": "ohmconnect", "status": "PENDING",
                            "requested_at": utc(2025, 6, 20, 19, 0), "reauthorization_required": True}],
        "updated_at": utc(2025, 7, 1, 17, 0, 1),
    },
    "gridflex.enrollment.IncentiveClaim": {
        "claim_id": "SIGNUP_BONUS/sce-sep-2025/SA-100234/energyhub/REQ-7780", "kind": "SIGNUP_BONUS",
        "action": "CLAIM", "program_id": "sce-sep-2025", "provider_id": "energyhub",
        "service_account_id": "SA-100234", "thermostat_serial": "EH-00F1-22A9", "effective_date": date(2025, 7, 7),
        "post_on": date(2025, 7, 31), "failures": [], "reason": None, "claimed_at": utc(2025, 7, 1, 17, 0, 1),
    },
    "gridflex.enrollment.IncentiveDecision": {
        "claim_id": "SIGNUP_BONUS/sce-sep-2025/SA-100234/energyhub/REQ-7780", "kind": "SIGNUP_BONUS",
        "outcome": "GRANTED", "program_id": "sce-sep-2025", "provider_id": "energyhub",
        "service_account_id": "SA-100234", "thermostat_serial": "EH-00F1-22A9", "amount": Decimal("75.00"),
        "effective_date": date(2025, 7, 7), "post_on": date(2025, 7, 31), "failures": [],
        "fund_remaining": Decimal("1499925.00"), "decided_at": utc(2025, 7, 1, 17, 0, 2),
    },
    "gridflex.enrollment.RemovalFinding": {
        "service_account_id": "SA-100234", "program_id": "sce-sep-2025", "thermostat_serial": "EH-00F1-22A9",
        "rule": "OFFLINE", "found_on": date(2025, 8, 10), "year": 2025,
        "evidence": "thermostat EH-00F1-22A9 offline since 2025-07-11, 30 consecutive days",
    },
    "gridflex.dispatch.EventLifecycle": {
        "event_id": "EVT-2025-07-16-A", "program_id": "sce-sep-2025", "status": "SCHEDULED", "revision": 1,
        "request_action": "SCHEDULE", "reason": "GRID_STRESS", "start": utc(2025, 7, 16, 23), "end": utc(2025, 7, 17, 2),
        "setpoint_offset_f": 4, "precool": True, "targets": ["energyhub"], "issued_at": utc(2025, 7, 16, 17),
        "decided_at": utc(2025, 7, 16, 17, 0, 1), "failures": [], "counted_ms": 10_800_000, "program_year": 2025,
        "year_used_ms": 10_800_000, "year_limit_ms": 648_000_000, "source_offset": 0,
    },
    "gridflex.baseline.EventWindowUsage": {
        "event_id": "EVT-2025-07-16-A", "program_id": "sce-sep-2025", "service_account_id": "SA-100234",
        "event_start": utc(2025, 7, 16, 23), "event_end": utc(2025, 7, 17, 2),
        "hour_before_kwh": Decimal("1.612000000"), "hour_after_kwh": None, "revision": 0,
    },
}
