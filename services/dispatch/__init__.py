"""Event dispatch: program limits, fan-out to providers, the event lifecycle."""
