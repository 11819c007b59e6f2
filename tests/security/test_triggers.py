"""Triggers under attack: a pull request whose head repository lives outside the pool's
git hosts (or on a metadata address) is refused before any connection or git process;
hostile ``on.schedule`` crons are refused with a clear error, within time bounds.

Connections and processes are observed with an audit hook on this process (where the
API runs, through TestClient), so "before any connection" is checked, not assumed."""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ci_pool.api import create_app
from ci_pool.core.triggers import schedule_crons
from ci_pool.service import webhooks
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings
from ci_pool.store.deliveries import WebhookDelivery
from ci_pool.store.models import Pipeline as PipelineRow

_SEEN: list[str] = []
_RECORDING = threading.Event()
_FORBIDDEN = ("169.254", "evil.example")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _RECORDING.is_set() or event not in ("socket.connect", "subprocess.Popen"):
        return
    seen = str(args[1]) if event == "socket.connect" else " ".join(map(str, args[1] or []))
    _SEEN.append(f"{event} {seen}")
    if any(bad in seen for bad in _FORBIDDEN):
        raise PermissionError(f"test guard: refusing to reach {seen}")


sys.addaudithook(_audit)

SHA_HEAD = "a" * 40
SHA_BASE = "b" * 40


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, str, Pool]]:
    key = secrets.token_urlsafe(24)
    (tmp_path / "gitea").write_text(key)
    settings = load_settings(
        None,
        home=tmp_path / "home",
        broker_url="redis://127.0.0.1:1/0",
        git_hosts=["git.internal.test"],
        allow_loopback_git=False,
        webhook_secrets={"gitea": f"file:{tmp_path / 'gitea'}"},
    )
    with TestClient(create_app(settings)) as c:
        yield c, key, Pool(settings)


def pr(head_url: str | None) -> dict[str, Any]:
    head_repo = None if head_url is None else {"clone_url": head_url}
    base = "https://git.internal.test/org/app.git"
    return {
        "action": "opened",
        "number": 3,
        "pull_request": {
            "head": {"ref": "feature", "sha": SHA_HEAD, "repo": head_repo},
            "base": {"ref": "main", "sha": SHA_BASE, "repo": {"clone_url": base}},
        },
        "repository": {"clone_url": base},
        "sender": {"login": "mallory"},
    }


def deliver(c: TestClient, key: str, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    _SEEN.clear()
    _RECORDING.set()
    try:
        return c.post(
            "/v1/hooks/gitea",
            content=body,
            headers={
                "X-Gitea-Event": "pull_request",
                "X-Gitea-Delivery": str(uuid.uuid4()),
                "X-Gitea-Signature": webhooks.sign(key, body),
                "Content-Type": "application/json",
            },
        )
    finally:
        _RECORDING.clear()


def nothing_recorded(pool: Pool) -> None:
    with pool.store.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        assert s.scalar(select(func.count()).select_from(PipelineRow)) == 0


@pytest.mark.parametrize(
    ("head_url", "says"),
    [
        ("https://evil.example.net/mallory/app.git", "is not in the git_hosts setting"),
        ("git://evil.example.org:9418/mallory/app.git", "is not in the git_hosts setting"),
        ("--upload-pack=touch /tmp/pwned", "must not start with '-'"),
        ("file:///srv/git/app.git", "local repositories are refused"),
        (None, "head repository is gone"),
    ],
)
def test_a_pull_request_from_a_fork_outside_the_git_hosts_is_refused(
    client: tuple[TestClient, str, Pool], head_url: str | None, says: str
) -> None:
    c, key, pool = client
    res = deliver(c, key, pr(head_url))
    assert res.status_code == 422, res.text
    assert says in res.text
    assert "pull_request.head.repo" in res.text
    assert _SEEN == [], _SEEN
    nothing_recorded(pool)


def test_a_fork_on_a_metadata_address_is_refused_before_any_connection(
    tmp_path: Path,
) -> None:
    key = secrets.token_urlsafe(24)
    (tmp_path / "gitea").write_text(key)
    settings = load_settings(
        None,
        home=tmp_path / "home",
        broker_url="redis://127.0.0.1:1/0",
        git_hosts=["*"],
        webhook_secrets={"gitea": f"file:{tmp_path / 'gitea'}"},
    )
    with TestClient(create_app(settings)) as c:
        res = deliver(c, key, pr("http://169.254.169.254/latest/meta-data.git"))
    assert res.status_code == 422, res.text
    assert "link-local" in res.text or "metadata" in res.text
    assert _SEEN == [], _SEEN


@pytest.mark.parametrize(
    ("crons", "says"),
    [
        (["*/5 * * * *" + " " * 200 + "1"], "at most 100 are accepted"),
        (["0 " * 1_000_000], "at most 100 are accepted"),
        (["0 4 * * *\x00"], "printable ASCII"),
        (["\u0661 * * * *"], "printable ASCII"),  # an Arabic-Indic digit one
        (["0 4 * * *\n0 5 * * *"], "printable ASCII"),
        (["0 0 30 2 * 2027"], "has 6 field(s)"),
        (["@reboot"], "macros are not supported"),
        (["${{ github.event }} * * * *"], "has 7 field(s)"),
        ([12], "must be a string"),
        (["* * * * *"] * 21, "at most 20"),
    ],
)
def test_hostile_crons_are_refused_with_a_clear_error(crons: list[Any], says: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError) as exc:
        schedule_crons({"schedule": [{"cron": c} for c in crons]})
    assert time.perf_counter() - start < 1.0
    message = str(exc.value)
    assert says in message and len(message) < 300, message
    assert "on.schedule" in message


def test_nested_schedule_entries_are_refused() -> None:
    with pytest.raises(ValueError, match=r"on.schedule\[0\] must be a mapping"):
        schedule_crons({"schedule": [[{"cron": "* * * * *"}]]})
