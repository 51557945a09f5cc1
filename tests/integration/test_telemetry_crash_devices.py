"""Thermostat states (a batch pipeline subscribed by pattern) across a SIGKILL: every device's first status still comes out."""

from __future__ import annotations

from datetime import timedelta

from gridflex.topics import DEVICE_STATUS
from tests.integration.conftest import crash_mid_stream, utc, wait_for_records

PROVIDER = "acme-energy"
DEVICES = 40_000


async def test_a_crash_mid_stream_loses_no_device_status(isolated_system_factory):
    system = isolated_system_factory("crash-devices", providers=(PROVIDER,))
    await system.create_topics()
    await system.tick(utc(2025, 7, 16, 12))
    observed = utc(2025, 7, 16, 11)
    topic = f"partner.{PROVIDER}.thermostat-state.v1"
    states = [
        (topic, f"T-{device:05d}", {
            "thermostat_serial": f"T-{device:05d}", "service_account_id": f"SA-{device:05d}",
            "observed_at": observed + timedelta(seconds=device % 60), "online": True, "hvac_mode": "COOL",
            "cool_setpoint_f": 76.0, "indoor_temp_f": 75.0, "event_id": None, "override": False,
        })
        for device in range(DEVICES)
    ]

    service = system.service("telemetry")
    before = await crash_mid_stream(system, service, states, DEVICE_STATUS)
    assert 0 < before < DEVICES, "the crash must land mid-stream"

    service.start()
    await wait_for_records(system, DEVICE_STATUS, DEVICES)
    seen = {r.value["thermostat_serial"] for r in await system.read(DEVICE_STATUS, idle_timeout=1)
            if r.value["change"] == "FIRST_SEEN"}
    assert len(seen) == DEVICES
