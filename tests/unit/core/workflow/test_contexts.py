"""Contexts in workflow files: which places may use them, the secrets a job references,
strategy values known per cell, runner-only functions, and the github context a run sees."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.workflow.expressions import Contexts, evaluate, render
from ci_pool.core.workflow.parser import Pipeline, parse_workflow, validate_workflow
from ci_pool.core.workflow.run_context import RunFacts, github_context, ref_facts, server_url
from ci_pool.exceptions import WorkflowError

CAPS = {n: Capability(**d) for n, d in merge_capabilities(None).items()}


def parse(text: str) -> Pipeline:
    return parse_workflow(textwrap.dedent(text), "wf.yml", CAPS)


def errors(text: str) -> list[WorkflowError]:
    return validate_workflow(textwrap.dedent(text), "wf.yml", CAPS)


def job(steps: str, extra: str = "", top: str = "") -> str:
    """One linux job: ``extra`` job-level lines, then ``steps`` (a list of steps)."""
    body = textwrap.indent(textwrap.dedent(steps), "      ")
    return f"{top}jobs:\n  build:\n    runs-on: linux\n{extra}    steps:\n{body}"


# -- secrets ---------------------------------------------------------------------------


def test_a_job_lists_exactly_the_secrets_its_values_reference() -> None:
    text = job(
        """\
        - run: deploy "${{ secrets.DEPLOY_KEY }}"
          env:
            T: ${{ github.token }}
        - if: secrets.FLAG != ''
          run: make
        - run: echo ${{ secrets.DEPLOY_KEY }} ${{ gitea.TOKEN }}
        """,
        extra="    env:\n      J: ${{ secrets.FROM_JOB }}\n",
        top="env:\n  W: ${{ secrets.FROM_WORKFLOW }}\n",
    )
    (built,) = parse(text).jobs
    assert set(built.spec.secrets) == {
        "FROM_WORKFLOW",
        "FROM_JOB",
        "DEPLOY_KEY",
        "GITHUB_TOKEN",
        "FLAG",
    }


def test_a_job_that_references_no_secret_gets_none() -> None:
    (built,) = parse(job("- run: echo ${{ github.sha }} $API_TOKEN\n")).jobs
    assert built.spec.secrets == ()


def test_secrets_are_not_available_in_a_jobs_if() -> None:
    (err,) = errors(job("- run: make\n", extra="    if: secrets.X != ''\n"))
    assert "secrets is not available here" in str(err)


@pytest.mark.parametrize("ref", ["toJSON(secrets)", "secrets", "secrets.A.B"])
def test_secrets_are_read_one_name_at_a_time(ref: str) -> None:
    (err,) = errors(job(f"- run: echo '${{{{ {ref} }}}}'\n"))
    assert "use secrets.NAME" in str(err)


@pytest.mark.parametrize(
    "ref", ["secrets.*", "env.*", "vars.*", "inputs.*", "github.*", "runner.*", "job.*.x"]
)
def test_a_filter_reads_needs_steps_matrix_and_the_event_only(ref: str) -> None:
    (err,) = errors(job(f"- run: echo '${{{{ toJSON({ref}) }}}}'\n"))
    assert "a '*' filter reads needs, steps, matrix" in str(err)


def test_filters_over_needs_steps_matrix_and_the_event_are_accepted() -> None:
    text = (
        "jobs:\n"
        "  a:\n    runs-on: linux\n    steps:\n      - run: 'true'\n"
        "  gate:\n    needs: [a]\n    runs-on: linux\n"
        "    if: always() && contains(needs.*.result, 'failure')\n"
        "    strategy:\n      matrix:\n        os: [x]\n"
        "    steps:\n"
        "      - id: one\n        run: echo ${{ join(matrix.*, ' ') }}\n"
        "      - run: echo ${{ join(steps.*.outcome) }} ${{ toJSON(needs.*.outputs.v) }}\n"
        "      - run: echo ${{ join(github.event.commits.*.id) }}\n"
    )
    assert errors(text) == []
    bad = text.replace("needs.*.result", "needs.*.nothing")
    (err,) = errors(bad)
    assert "use needs.*.result or needs.*.outputs.NAME" in str(err)


# -- availability ------------------------------------------------------------------------


def test_every_context_is_accepted_where_actions_offers_it() -> None:
    text = job(
        """\
        - run: |
            echo ${{ github.repository_owner }} ${{ forgejo.ref_name }} ${{ gitea.server_url }}
            echo ${{ github.event.pull_request.head.sha }} ${{ runner.temp }} ${{ job.status }}
            echo ${{ job.container.id }} ${{ vars.X }} ${{ inputs.level }} ${{ env.A }}
            echo ${{ strategy.job-total }} ${{ toJSON(github) }} ${{ hashFiles('**/go.sum') }}
        """,
        extra="    if: vars.ENABLED == 'yes' && inputs.dry != true\n",
    )
    assert parse(text).jobs


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("    env:\n      H: ${{ hashFiles('x') }}\n", ["hashFiles() reads the runner's"]),
        ("    if: runner.os == 'Linux'\n", ["runner is not available here"]),
        ("    name: ${{ steps.a.outputs.x }}\n", ["steps is not available here"]),
    ],
)
def test_runner_contexts_and_functions_only_where_a_runner_evaluates_them(
    where: str, words: list[str]
) -> None:
    (err,) = errors(job("- run: make\n", extra=where))
    for word in words:
        assert word in str(err)


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("github.nope", ["github.repository_owner", "github.token"]),
        ("github.ref.x", ["github has github.action"]),
        ("runner.cpus", ["runner.arch, runner.name, runner.os"]),
        ("strategy.index", ["strategy.job-index"]),
        ("job.steps", ["job.container, job.services, job.status"]),
        ("vars", ["use vars.NAME"]),
    ],
)
def test_unknown_properties_name_the_ones_that_exist(ref: str, words: list[str]) -> None:
    (err,) = errors(job(f"- run: echo ${{{{ {ref} }}}}\n"))
    for word in words:
        assert word in str(err), str(err)


def test_strategy_values_are_known_per_cell() -> None:
    text = job(
        "- run: echo ${{ strategy.job-index }}/${{ strategy.job-total }} "
        "${{ strategy.fail-fast }} ${{ strategy.max-parallel }}\n",
        extra="    strategy:\n      fail-fast: false\n      max-parallel: 2\n"
        "      matrix:\n        n: [a, b, c]\n",
    )
    runs = [j.spec.steps[0].run for j in parse(text).jobs]
    assert runs == ["echo 0/3 false 2", "echo 1/3 false 2", "echo 2/3 false 2"]


def test_hash_files_is_left_for_the_runner() -> None:
    (built,) = parse(job("- run: echo ${{ hashFiles('go.sum') }}\n")).jobs
    assert built.spec.steps[0].run == "echo ${{ hashFiles('go.sum') }}"


# -- functions ---------------------------------------------------------------------------


def test_json_and_join_functions() -> None:
    ctx: dict[str, Any] = {"matrix": {"os": ["a", "b"]}}
    assert evaluate("join(matrix.os, ', ')", ctx) == "a, b"
    assert evaluate("join(matrix.os)", ctx) == "a,b"
    assert evaluate("join('one')", ctx) == "one"
    assert json.loads(evaluate("toJSON(matrix)", ctx)) == {"os": ["a", "b"]}
    assert evaluate("fromJSON('{\"a\": [1, true]}').a[1]", ctx) is True
    assert evaluate("fromJSON('3') == 3", ctx) is True
    with pytest.raises(ValueError, match="is not JSON"):
        evaluate("fromJSON('{nope')", ctx)
    with pytest.raises(ValueError, match="deeper than"):
        evaluate(f"fromJSON('{'[' * 100}{']' * 100}')", ctx)


def test_hash_files_needs_the_runner() -> None:
    with pytest.raises(ValueError, match="only on the runner"):
        render("${{ hashFiles('x') }}", {})
    ctx = Contexts()
    seen: list[list[str]] = []
    ctx.hash_files = lambda patterns: seen.append(patterns) or "abc"
    assert render("${{ hashFiles('a', 'b') }}", ctx) == "abc"
    assert seen == [["a", "b"]]


# -- the github context ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "facts"),
    [
        ("main", ("refs/heads/main", "main", "branch")),
        ("refs/heads/release/1.x", ("refs/heads/release/1.x", "release/1.x", "branch")),
        ("refs/tags/v1.2.3", ("refs/tags/v1.2.3", "v1.2.3", "tag")),
        ("refs/pull/7/head", ("refs/pull/7/head", "7/head", "")),
        ("a" * 40, ("", "a" * 40, "")),
    ],
)
def test_ref_name_and_type(ref: str, facts: tuple[str, str, str]) -> None:
    assert ref_facts(ref) == facts


@pytest.mark.parametrize(
    ("repo", "url"),
    [
        ("https://git.example.org/acme/app.git", "https://git.example.org"),
        ("http://127.0.0.1:3000/acme/app.git", "http://127.0.0.1:3000"),
        ("ssh://git@git.example.org:2222/acme/app.git", "https://git.example.org"),
        ("git@github.com:acme/app.git", "https://github.com"),
        ("/srv/git/app.git", ""),
    ],
)
def test_server_url_is_the_repositorys_scheme_and_host(repo: str, url: str) -> None:
    assert server_url(repo) == url


def test_github_context_of_a_pull_request_run() -> None:
    payload = {
        "pull_request": {"head": {"ref": "feature"}, "base": {"ref": "main"}},
        "sender": {"login": "alice"},
    }
    github = github_context(
        repo="https://forge.example/acme/app.git",
        ref="refs/pull/7/head",
        sha="f" * 40,
        event_name="pull_request",
        facts=RunFacts(event=payload, run_number=4),
        run_id="p1",
        job="test",
        attempt=2,
    )
    assert github["repository"] == "acme/app"
    assert github["repository_owner"] == "acme"
    assert (github["head_ref"], github["base_ref"]) == ("feature", "main")
    assert github["actor"] == "alice"
    assert (github["run_number"], github["run_attempt"], github["job"]) == ("4", "2", "test")
    assert github["event"] == payload


def test_head_and_base_ref_are_empty_on_push() -> None:
    github = github_context(
        repo="https://forge.example/acme/app.git",
        ref="main",
        sha="",
        event_name="push",
        facts=RunFacts(event={"pull_request": {"head": {"ref": "x"}}}),
        run_id="p",
    )
    assert (github["head_ref"], github["base_ref"]) == ("", "")


def test_an_oversized_event_payload_is_refused() -> None:
    with pytest.raises(ValueError, match="the event payload is"):
        RunFacts(event={"blob": "x" * (1024 * 1024 + 1)})


def test_json_values_fold_when_scalar_and_stay_for_the_runtime_otherwise() -> None:
    (built,) = parse(
        job(
            """\
            - run: |
                echo ${{ fromJSON('{"a": [1, 2]}').a[1] }}
            - run: |
                echo ${{ join(fromJSON('["x", "y"]'), env.SEP) }}
            """
        )
    ).jobs
    first, second = (s.run for s in built.spec.steps)
    assert first == "echo 2\n"
    assert second == 'echo ${{ join(fromJSON(\'["x", "y"]\'), env.SEP) }}\n'
    assert render(second, {"env": {"SEP": "-"}}) == "echo x-y\n"


@pytest.mark.parametrize(
    "text", ["fromJSON(env.X).a[0]", "fromJSON(env.X)['a b'].c", "toJSON(fromJSON(env.X).a)"]
)
def test_properties_of_a_call_write_back_as_they_parse(text: str) -> None:
    from ci_pool.core.workflow.expressions import parse, unparse

    assert unparse(parse(text)) == text
    assert parse(unparse(parse(text))) == parse(text)
