"""pyproject.toml builds without setuptools' deprecation banner: the license is an SPDX
string (PEP 639), and the build asks for a setuptools that reads one (77 or later)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_expression() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"


def test_the_build_needs_a_setuptools_that_reads_it() -> None:
    requires = PYPROJECT["build-system"]["requires"]
    pins = [r for r in requires if r.startswith("setuptools")]
    assert len(pins) == 1
    found = re.fullmatch(r"setuptools\s*>=\s*(\d+)(\.\d+)*", pins[0])
    assert found is not None and int(found.group(1)) >= 77
