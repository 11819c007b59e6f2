"""Both webhook parsers (Gitea's and GitHub's push payloads, as JSON or GitHub's
form-encoded ``payload=``) under fuzzing: any body is a push, a reason it starts nothing,
or an InputError the API answers 422; never another exception, and each within a time
and memory bound. ``CI_POOL_FUZZ_EXAMPLES`` sets how many examples (default 200)."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ci_pool.core import triggers
from ci_pool.exceptions import InputError
from ci_pool.service import webhooks
from ci_pool.store.deliveries import Push

EXAMPLES = int(os.environ.get("CI_POOL_FUZZ_EXAMPLES", "200"))
#: Per example: a parse is meant to take well under a millisecond; these are sanity bounds
#: (the 100 kB nesting examples run under tracemalloc took 1.1 s once on a busy 2-core CI).
TIME_BUDGET_S = 5.0
MEMORY_BUDGET = 64 * 1024 * 1024
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain", "")


def parse(body: bytes, content_type: str, allow_local: bool = False) -> Push | str:
    """What ``webhooks.receive`` does with a verified body, short of fetching workflows."""
    return webhooks.parse_push(webhooks.load_body(body, content_type), allow_local)


def bounded(call: Callable[[], object]) -> object:
    """Run ``call``: a result or an InputError, within the time and memory bounds."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        return call()
    except InputError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return exc
    finally:
        took = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert took < TIME_BUDGET_S, took
        assert peak < MEMORY_BUDGET, peak


_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_SHA = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
_REF = st.one_of(
    st.sampled_from(["refs/heads/main", "refs/tags/v1", "refs/pull/1/head", "main", ""]),
    st.text(max_size=60).map(lambda t: "refs/heads/" + t),
    st.text(max_size=300),
)
_URL = st.one_of(
    st.sampled_from(
        [
            "https://git.example.org/org/app.git",
            "git@git.example.org:org/app.git",
            "file:///srv/git/app.git",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c id",
            "/srv/git/app.git",
        ]
    ),
    st.text(max_size=80),
)
_FILES = st.lists(st.one_of(st.text(max_size=30), _JSON), max_size=4)
_COMMIT = st.fixed_dictionaries(
    {},
    optional={"added": _FILES, "removed": _FILES, "modified": _FILES, "id": _JSON},
)
_PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "ref": st.one_of(_REF, _JSON),
        "before": st.one_of(_SHA, st.just("0" * 40), _JSON),
        "after": st.one_of(_SHA, st.just("0" * 40), _JSON),
        "deleted": st.one_of(st.booleans(), _JSON),
        "repository": st.one_of(
            st.fixed_dictionaries({}, optional={"clone_url": st.one_of(_URL, _JSON)}), _JSON
        ),
        "commits": st.one_of(st.lists(_COMMIT, max_size=4), _JSON),
        "total_commits": st.one_of(st.integers(), _JSON),
        "extra": _JSON,
    },
)


@FUZZ
@given(body=st.binary(max_size=2048), content_type=st.sampled_from(CONTENT_TYPES))
@example(body=b"[" * 100_000, content_type="application/json")
@example(body=b"payload=" + b"%5B" * 100_000, content_type="application/x-www-form-urlencoded")
@example(body=b'{"a":' * 50_000 + b"1" + b"}" * 50_000, content_type="application/json")
@example(body=b"\xff\xfe", content_type="application/x-www-form-urlencoded")
def test_any_bytes_are_a_push_a_reason_or_an_input_error(body: bytes, content_type: str) -> None:
    result = bounded(lambda: parse(body, content_type))
    assert isinstance(result, Push | str | InputError)


@FUZZ
@given(payload=_PAYLOAD, form=st.booleans(), allow_local=st.booleans())
def test_any_push_shaped_payload_is_a_push_a_reason_or_an_input_error(
    payload: dict[str, Any], form: bool, allow_local: bool
) -> None:
    text = json.dumps(payload)
    if form:
        body, content_type = urlencode({"payload": text}).encode(), CONTENT_TYPES[1]
    else:
        body, content_type = text.encode(), CONTENT_TYPES[0]
    result = bounded(lambda: parse(body, content_type, allow_local))
    assert isinstance(result, Push | str | InputError)
    if isinstance(result, Push):
        # What a push carries on was checked: a real ref name and commit, a usable URL.
        assert not result.repo.startswith("-") and "::" not in result.repo.split("/", 1)[0]
        assert len(result.commit) in (40, 64) and not result.name.startswith("-")
        if not allow_local:
            assert not result.repo.startswith(("file:", "/"))


@FUZZ
@given(
    provider=st.sampled_from(webhooks.PROVIDERS),
    headers=st.dictionaries(
        st.sampled_from(
            ["x-gitea-signature", "x-hub-signature-256", "x-gitea-delivery", "x-github-event"]
        ),
        st.text(max_size=80),
        max_size=4,
    ),
    body=st.binary(max_size=256),
)
def test_any_signature_header_is_accepted_or_a_401(
    provider: webhooks.Provider, headers: dict[str, str], body: bytes
) -> None:
    try:
        bounded(lambda: webhooks.verify_signature(provider, "the-secret", body, headers))
    except webhooks.HookRefused as exc:
        assert exc.status == 401 and "the-secret" not in str(exc)


@pytest.mark.parametrize("provider", webhooks.PROVIDERS)
def test_a_deeply_nested_body_is_an_input_error(provider: str) -> None:
    with pytest.raises(InputError, match="nested"):
        parse(b"[" * 100_000 + b"]" * 100_000, "application/json")


def test_a_deeply_nested_form_encoded_payload_is_an_input_error() -> None:
    # The API's body check sees only %5B here; the parser measures the decoded payload.
    payload = urlencode({"payload": "[" * 100 + "]" * 100})
    with pytest.raises(InputError, match="nested"):
        parse(payload.encode(), "application/x-www-form-urlencoded")


# -- [skip ci] in the pushed head commit ----------------------------------------------------

HEAD = "a" * 40


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "[skip ci]",
        {"head_commit": "[skip ci]"},
        {"head_commit": {"message": ["[skip ci]"]}},
        {"head_commit": {"message": 7}},
        {"commits": "[skip ci]"},
        {"commits": [{"id": "b" * 40, "message": "[skip ci]"}]},  # not the head commit
        {"commits": [["[skip ci]"], {"id": HEAD, "message": None}]},
        # Past the part of the message searched: no marker (and no time spent on the rest).
        {"head_commit": {"message": "x" * triggers.SKIP_MESSAGE_CHARS + "[skip ci]"}},
    ],
)
def test_a_payload_shaped_otherwise_skips_nothing(data: Any) -> None:
    assert triggers.skip_marker(data, HEAD) is None


def test_a_huge_message_is_searched_in_bounded_time() -> None:
    message = "[skip c" * (4 << 20)  # 28 MiB of near misses
    started = time.monotonic()
    assert triggers.skip_marker({"head_commit": {"message": message}}, HEAD) is None
    assert time.monotonic() - started < 5  # generous: only the first 64 KiB is read


@pytest.mark.parametrize("marker", triggers.SKIP_MARKERS)
def test_every_marker_in_any_case_skips(marker: str) -> None:
    data = {"head_commit": {"message": f"chore: bump\n\n{marker.upper()}"}}
    assert triggers.skip_marker(data, HEAD) == marker
