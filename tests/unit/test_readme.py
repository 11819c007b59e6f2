"""The README documents what the code accepts: every repository URL scheme."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ci_pool.core.names import REMOTE_SCHEMES

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("scheme", sorted(REMOTE_SCHEMES))
def test_every_accepted_url_scheme_is_documented(scheme: str) -> None:
    assert f"`{scheme}://`" in README.read_text()


@pytest.mark.parametrize("scheme", sorted(REMOTE_SCHEMES))
def test_submit_help_names_every_accepted_url_scheme(scheme: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ci_pool", "submit", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"{scheme}://" in res.stdout
