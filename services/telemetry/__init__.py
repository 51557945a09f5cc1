"""Telemetry ingestion: meter reads and thermostat states in; clean intervals and device status out."""
