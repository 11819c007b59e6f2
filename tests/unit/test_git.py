"""git's errors reach the user whole (with real git): a missing local repository says what
git said, not only its last line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ci_pool.embedded import make_repo
from ci_pool.exceptions import CheckoutError, InputError
from ci_pool.git import GitRunner, git_error, repo_transport, resolve_ref
from ci_pool.settings import load_settings


def test_a_missing_local_repository_gives_the_whole_git_error(tmp_path: Path) -> None:
    settings = load_settings(None, home=tmp_path / "home", allow_local_repos=True)
    missing = tmp_path / "nowhere.git"
    with pytest.raises(InputError) as caught:
        resolve_ref(str(missing), "main", settings)
    text = str(caught.value)
    assert f"cannot read {missing}: fatal:" in text
    assert "does not appear to be a git repository" in text
    assert "and the repository exists." in text  # the continuation, on the same line
    assert "\n" not in text


def test_a_local_repository_still_resolves(tmp_path: Path) -> None:
    sha = make_repo(tmp_path / "app.git", {"README": "x\n"})
    settings = load_settings(None, home=tmp_path / "home", allow_local_repos=True)
    assert resolve_ref(str(tmp_path / "app.git"), "main", settings) == sha


def test_a_failed_git_command_reports_every_message(tmp_path: Path) -> None:
    git = GitRunner({}, {})
    with pytest.raises(CheckoutError) as caught:
        git.run("ls-remote", "--end-of-options", str(tmp_path / "gone"))
    text = str(caught.value)
    assert text.startswith("git ls-remote failed: fatal: ")
    assert "Could not read from remote repository. Please make sure" in text


def test_git_error_joins_continuations_and_drops_progress() -> None:
    stderr = (
        "Cloning into 'x'...\rReceiving objects: 50%\rReceiving objects: 100%\n"
        "fatal: first problem\nwith more words\n\nerror: second one\n"
    )
    assert git_error(stderr) == (
        "Receiving objects: 100%; fatal: first problem with more words; error: second one"
    )
    assert git_error("") == "no output"
    assert git_error("fatal: " + "x" * 2000, limit=50).endswith("...")


@pytest.mark.parametrize(
    ("repo", "transport"),
    [
        ("/srv/git/app.git", "file"),
        ("./app", "file"),
        ("file:///srv/git/app.git", "file"),
        ("https://git.example.com/org/app.git", "https"),
        ("http://127.0.0.1:8080/app.git", "http"),
        ("git://127.0.0.1/app.git", "git"),
        ("ssh://git@host/org/app.git", "ssh"),
        ("git@host:org/app.git", "ssh"),
    ],
)
def test_the_transport_of_a_repository(repo: str, transport: str) -> None:
    assert repo_transport(repo) == transport


def test_an_annotated_tag_resolves_to_the_commit_it_names(tmp_path: Path) -> None:
    sha = make_repo(tmp_path / "app.git", {"README": "x\n"})
    env = {**os.environ, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    subprocess.run(
        ["git", "-C", str(tmp_path / "app.git"), "tag", "-a", "v1", "-m", "v1", sha],
        env=env,
        check=True,
    )
    settings = load_settings(None, home=tmp_path / "home", allow_local_repos=True)
    assert resolve_ref(str(tmp_path / "app.git"), "v1", settings) == sha
