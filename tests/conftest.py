"""
Pytest configuration shared by every test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _temporaryWorkingDirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Run each test in its own temporary working directory, so that trial's C{mktemp()}
    (which returns paths relative to the working directory) and anything else a test
    writes to a relative path stays out of the checkout.
    """
    monkeypatch.chdir(tmp_path)
