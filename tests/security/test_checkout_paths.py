"""A checkout's ``path:`` stays inside the workspace: every form of escape is refused when the
workflow is read, at its file:line, before anything runs."""

from __future__ import annotations

import pytest

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.workflow.parser import validate_workflow

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}

ESCAPES = ["../../x", "a/../../x", "./..", "/etc", "//etc/cron.d", "~/x", "..\\\\x", "a\\n/b"]


@pytest.mark.parametrize("path", ESCAPES)
def test_a_path_out_of_the_workspace_is_refused_at_its_line(path: str) -> None:
    text = (
        "jobs:\n  build:\n    runs-on: linux\n    steps:\n"
        "      - uses: actions/checkout@v4\n"
        f'        with: {{repository: org/lib, path: "{path}"}}\n'
        "      - run: make\n"
    )
    (err,) = validate_workflow(text, "wf.yml", CAPS)
    assert str(err).startswith("wf.yml:6:"), err
    assert "jobs.build.steps[0].with.path:" in str(err)


@pytest.mark.parametrize("path", ["deps/lib", "./deps", "a/./b", ""])
def test_paths_inside_the_workspace_are_taken(path: str) -> None:
    text = (
        "jobs:\n  build:\n    runs-on: linux\n    steps:\n"
        f'      - uses: actions/checkout@v4\n        with: {{path: "{path}"}}\n'
        "      - run: make\n"
    )
    assert validate_workflow(text, "wf.yml", CAPS) == []
