"""``runs-on: {group, labels}`` and ``runner:`` in workflow files: which runners a job may
run on by name, and every mistake reported at file:line:column."""

from __future__ import annotations

import textwrap

import pytest

from ci_pool.core.admission import Admission
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.workflow.parser import parse_workflow, validate_workflow
from ci_pool.core.workflow.targets import sent_to
from ci_pool.exceptions import InputError

CAPS = {n: Capability(**d) for n, d in merge_capabilities({}).items()}
RULES = Admission(CAPS, runner_groups={"acme": "client-acme-*"})


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_workflow(textwrap.dedent(text), "wf.yml", RULES)


def errors(text: str) -> list[str]:
    return [str(e) for e in validate_workflow(textwrap.dedent(text), "wf.yml", RULES)]


def test_group_labels_and_runner_key_map_to_capability_and_glob() -> None:
    pipe = parse(
        """\
        on: push
        jobs:
          grouped:
            runs-on: {group: acme, labels: [linux]}
            steps: [{run: make}]
          named:
            runs-on: linux
            runner: 'Client-B-*'
            steps: [{run: make}]
          cells:
            strategy: {matrix: {client: [a, b]}}
            runs-on: [self-hosted, linux]
            runner: client-${{ matrix.client }}-*
            steps: [{run: make}]
          anywhere:
            runs-on: [linux]
            steps: [{run: make}]
        """
    )
    got = {j.key: (j.spec.capability, j.spec.runner) for j in pipe.jobs}
    assert got == {
        "grouped": ("linux", "client-acme-*"),
        "named": ("linux", "client-b-*"),
        "cells (a)": ("linux", "client-a-*"),
        "cells (b)": ("linux", "client-b-*"),
        "anywhere": ("linux", None),
    }


def test_mistakes_are_reported_where_they_are() -> None:
    found = errors(
        """\
        on: push
        jobs:
          a:
            runs-on: {group: nope, labels: [linux]}
            steps: [{run: make}]
          b:
            runs-on: {group: acme}
            steps: [{run: make}]
          c:
            runs-on: {group: acme, labels: [linux], size: big}
            steps: [{run: make}]
          d:
            runs-on: linux
            runner: 'a/b'
            steps: [{run: make}]
          e:
            runs-on: {group: acme, labels: [linux]}
            runner: 'client-*'
            steps: [{run: make}]
          f:
            runs-on: {group: acme, labels: [gpu]}
            steps: [{run: make}]
        """
    )
    assert found == [
        "wf.yml:4:22: jobs.a.runs-on.group: no runner group 'nope'; groups that exist: acme; "
        "or send the job by name with runner: 'GLOB'",
        "wf.yml:7:14: jobs.b.runs-on: labels: is required beside group: (the labels name the "
        "capability: android, audit, deploy, flutter-web, iso, linux)",
        "wf.yml:10:45: jobs.c.runs-on.size: unknown key. A runs-on may have: group, labels",
        "wf.yml:14:13: jobs.d.runner: 'a/b' is not a runner glob: use 1-128 of a-z, 0-9, '.', "
        "'-' and the wildcards * [...] ? + (like client-acme-*)",
        "wf.yml:18:13: jobs.e.runner: give either runner: or runs-on.group:, not both",
        "wf.yml:21:36: jobs.f.runs-on.labels: no capability has the label gpu; capabilities "
        "that exist: android, audit, deploy, flutter-web, iso, linux; to route it, map the "
        'label in ci-pool.toml: [capabilities.<name>] labels = ["gpu"] (labels add to the '
        "capability's own)",
    ]


def test_run_runner_sends_every_job_and_refuses_a_conflict() -> None:
    text = "on: push\njobs:\n  a:\n    runs-on: linux\n    steps: [{run: make}]\n"
    pipe = sent_to(parse(text), "Client-A-*")
    assert [j.spec.runner for j in pipe.jobs] == ["client-a-*"]
    own = parse(text.replace("runs-on: linux", "runs-on: linux\n    runner: b-*"))
    with pytest.raises(InputError, match=r"jobs.a is sent to runners 'b-\*'.*drop that"):
        sent_to(own, "client-a-*")
    with pytest.raises(InputError, match="is not a runner glob"):
        sent_to(parse(text), "a b")
