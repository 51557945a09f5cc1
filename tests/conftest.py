"""Test session wiring: tests under tests/integration and tests/e2e run on the real stack."""

from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        kind = Path(item.fspath).relative_to(TESTS).parts[0]
        if kind == "integration":
            item.add_marker(pytest.mark.integration)
        elif kind == "e2e":
            item.add_marker(pytest.mark.e2e)
