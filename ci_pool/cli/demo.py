"""``ci-pool demo``: the whole path on one host, with embedded services, then exit with the
job's status."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ci_pool.core.specs import JobState, parse_job_spec
from ci_pool.embedded import GitDaemon, RedisServer, build_busybox_image, make_repo
from ci_pool.home import default_home
from ci_pool.service.pool import Pool
from ci_pool.settings import load_settings

DEMO_IMAGE = "ci-pool/demo:latest"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo-app"
if not EXAMPLE.is_dir():  # installed without the source tree: run from a checkout
    EXAMPLE = Path.cwd() / "examples" / "demo-app"


def _demo_image(console: Console) -> str | None:
    """The Docker image for the demo job, built FROM scratch around busybox; None means
    no Docker engine answers (or no busybox to build from)."""
    try:
        import docker

        from ci_pool import container_engine

        client = container_engine.connect(timeout=30, ping=True)
    except Exception as exc:
        console.print(
            f"[yellow]No container engine answers ({type(exc).__name__}); running the "
            "steps on the host instead (capability mode = host).[/yellow]",
            markup=True,
        )
        return None
    try:
        client.images.get(DEMO_IMAGE)
        return DEMO_IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = shutil.which("busybox")
    if not busybox:
        console.print(
            "[yellow]Docker answers but busybox is not installed to build the demo "
            "image; running the steps on the host instead.[/yellow]",
            markup=True,
        )
        return None
    build_busybox_image(client, DEMO_IMAGE, busybox)
    console.print(f"built the demo image {DEMO_IMAGE} from busybox")
    return DEMO_IMAGE


def run_demo(console: Console) -> int:
    home = Path(os.environ.get("CI_POOL_HOME") or default_home()).resolve() / "demo"
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    image = _demo_image(console)
    config = home / "ci-pool.toml"
    # The demo's git daemon listens on loopback, which the pool refuses unless allowed.
    config.write_text(
        "allow_loopback_git = true\n\n"
        + (
            f'[capabilities.linux]\nimage = "{image}"\n'
            if image
            else '[capabilities.linux]\nmode = "host"\n'
        )
    )
    redis_srv = RedisServer.start(home / "redis")
    (home / "git").mkdir()
    sha = make_repo(
        home / "git" / "demo-app.git",
        {p.name: p.read_text() for p in EXAMPLE.iterdir() if p.is_file()},
    )
    git = GitDaemon.start(home / "git")
    console.print(
        f"redis-server on {redis_srv.url}, git daemon on git://127.0.0.1:{git.port}/, "
        f"store {home / 'ci-pool.db'}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CI_POOL_")}
    env.update(CI_POOL_CONFIG=str(config), CI_POOL_BROKER_URL=redis_srv.url, CI_POOL_HOME=str(home))
    with (home / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "ci_pool", "worker", "--capability", "linux"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        pool = Pool(load_settings(config, broker_url=redis_srv.url, home=home))
        return _submit_and_follow(console, pool, git.url("demo-app.git"), sha, worker, home)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        git.stop()
        redis_srv.stop()


def _submit_and_follow(
    console: Console,
    pool: Pool,
    repo: str,
    sha: str,
    worker: subprocess.Popen[bytes],
    home: Path,
) -> int:
    deadline = time.monotonic() + 60
    with console.status("starting a worker for capability 'linux'..."):
        while not pool.runners("linux"):
            if worker.poll() is not None or time.monotonic() > deadline:
                console.print(
                    Text(f"the worker did not start; see {home / 'worker.log'}", style="red")
                )
                return 3
            time.sleep(0.1)
    console.print(f"worker online: {pool.runners('linux')[0].runner_id}")
    spec = parse_job_spec(
        {
            "repo": repo,
            "ref": "main",
            "capability": "linux",
            "name": "demo-app build",
            "steps": [
                {"name": "build", "run": "./build.sh"},
                {"name": "check", "run": "cat dist/demo-app.txt"},
            ],
        },
        allow_local_repos=False,
    )
    job = pool.submit(spec)
    console.print(
        f"submitted job [bold]{job.id}[/bold] for commit {sha[:12]}; live log:", markup=True
    )
    for _ts, line in pool.follow(job.id):
        console.print(Text.assemble(("  | ", "dim"), line), soft_wrap=True)
    job = pool.wait(job.id)
    waited = (
        (job.started_at - job.queued_at).total_seconds() if job.started_at and job.queued_at else 0
    )
    ran = (
        (job.finished_at - job.started_at).total_seconds()
        if job.finished_at and job.started_at
        else 0
    )
    style = "green" if job.state == JobState.SUCCEEDED.value else "red"
    console.print(
        f"job {job.id} [{style}]{job.state}[/{style}] exit {job.exit_code} on "
        f"{job.runner_id}: picked up in {waited * 1000:.0f} ms, ran {ran:.2f} s",
        markup=True,
    )
    if job.state == JobState.SUCCEEDED.value:
        return 0
    return job.exit_code or 1
