"""The harness every benchmark in bench/ shares: a temp dir, Redis, a git server and worker
subprocesses on loopback, their teardown (also on SIGTERM or an exception), the machine
record, percentiles, and the results: ``<name>.json``, ``<name>.png`` and ``summary.md``.

A benchmark is a scenario written against :class:`Bench`::

    with Bench("dispatch", args) as bench:
        redis = bench.redis()
        repo = bench.git_repo({"f.txt": "x"})
        ...
        bench.write(report, plot)

Leaving the block stops everything the bench started, newest first, and removes the temp dir
(unless ``--keep``). ``--quick`` runs are written to ``results/quick/`` (not committed), so
a smoke run never replaces the committed full results.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import math
import os
import platform
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol


def _load_docker_package() -> None:
    """bench/docker.py's name shadows the docker package for every script here (a script's
    directory is first on sys.path): load the package once with this directory off the
    path, so later ``import docker`` (in ci_pool too) finds it in sys.modules."""
    here = Path(__file__).resolve().parent
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != here]
    try:
        import docker  # noqa: F401
    finally:
        sys.path[:] = saved


_load_docker_package()

from ci_pool.embedded import (  # noqa: E402 - after the docker package is loaded
    GitDaemon,
    RedisServer,
    free_port,
    make_repo,
    redis_server_binary,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_DIR = RESULTS_DIR / "quick"
MIB = 1024 * 1024
#: Order of the sections in summary.md; other results follow by name.
SUMMARY_ORDER = (
    "all", "dispatch", "checkout", "checkout_large", "modes", "throughput", "docker", "pipeline",
    "status", "api",
)  # fmt: skip
#: Benchmarks run by other means whose absence the summary table states.
EXPECTED = ("docker",)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """Import the benchmark script at ``path`` without running it (its ``__main__`` guard
    stays shut), under ``name`` (default ``bench_<stem>``: a plain ``docker`` is docker-py)
    in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(name or f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def logger(name: str) -> Callable[[str], None]:
    """``log(msg)`` printing ``[name HH:MM:SS] msg``, flushed (output is often piped)."""

    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    return log


# -- statistics -------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_stats(
    samples_s: Sequence[float],
    *,
    unit: str = "ms",
    pcts: Sequence[int] = (50, 90, 99),
    digits: int = 3,
    extremes: Sequence[str] = ("max", "mean", "min"),
) -> dict[str, Any]:
    """``n``, ``p<q>_<unit>`` for each q, then max/mean/min, from samples in seconds."""
    scale = {"ms": 1000.0, "s": 1.0}[unit]
    values = [float(v) * scale for v in samples_s]
    out: dict[str, Any] = {"n": len(values)}
    for q in pcts:
        out[f"p{q}_{unit}"] = round(percentile(values, q), digits) if values else None
    funcs: dict[str, Callable[[list[float]], float]] = {
        "max": max,
        "mean": lambda v: math.fsum(v) / len(v),
        "min": min,
    }
    for name in extremes:
        out[f"{name}_{unit}"] = round(funcs[name](values), digits) if values else None
    return out


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """a / b rounded, or None when either is unknown or b is zero."""
    return round(a / b, digits) if a is not None and b else None


# -- processes --------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This environment without any CI_POOL_* or BENCH_* (the caller's must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CI_POOL_", "BENCH_"))}


def ci_pool_env(
    *, broker_url: str, store_url: str, home: Path, config: Path, **extra: str
) -> dict[str, str]:
    """A worker's environment: the bench's broker, store and config, and its own home."""
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env()
    env.update(
        CI_POOL_BROKER_URL=broker_url,
        CI_POOL_STORE_URL=store_url,
        CI_POOL_HOME=str(home),
        CI_POOL_CONFIG=str(config),
        **{"CI_POOL_ALLOW_LOOPBACK_GIT": "1", **extra},
    )
    return env


@dataclass
class Proc:
    """A subprocess in its own process group (a Celery worker: main process plus children)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = False
    signalled: bool = False  # SIGTERM sent to the main process (a warm shutdown under way)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check(self, when: str = "") -> None:
        """Raise with the log's tail if the process has exited."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited{when}:\n{self.tail()}")

    def stop(self, grace: float = 20.0) -> None:
        stop_procs([self], grace)


def spawn(name: str, cmd: list[str], env: dict[str, str], cwd: Path, logfile: Path) -> Proc:
    with logfile.open("wb") as fh:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, proc, logfile)


def begin_stop(procs: Iterable[Proc]) -> None:
    """SIGTERM to each main process only (a SIGTERM to a Celery worker's whole group would
    kill its prefork child mid-task), once, without waiting: an idle Celery worker's warm
    shutdown takes seconds of mostly waiting, which can overlap unmeasured work (the next
    set of workers starting, the report being drawn) before ``stop_procs`` reaps it."""
    for p in procs:
        if not p.stopped and not p.signalled and p.alive():
            try:
                p.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        p.signalled = True


def stop_procs(procs: Iterable[Proc], grace: float = 20.0) -> None:
    """Warm shutdown, all at once: ``begin_stop`` (unless already begun), then wait up to
    ``grace`` and SIGKILL whatever is left of each group. Each process is stopped once."""
    todo = [p for p in procs if not p.stopped]
    begin_stop(todo)
    end = time.monotonic() + grace
    for p in todo:
        try:
            p.proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{p.name} did not stop within {grace:.0f}s; SIGKILL", flush=True)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"{p.name} (pid {p.pid}) still there after SIGKILL", flush=True)
        p.stopped = True


def on_sigterm(signum: int, _frame: Any) -> None:
    """SIGTERM ends a benchmark through SystemExit, so its cleanup runs."""
    raise SystemExit(128 + signum)


# -- machine ----------------------------------------------------------------------------------


def tool_version(cmd: list[str]) -> str:
    """A tool's version line (or why it is unknown), for the machine record."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = out.stdout.strip() or out.stderr.strip()
    return text.splitlines()[-1] if text else ""


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(tmp: Path | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, memory, OS, Python, the versions of the
    libraries and tools on the measured path, and the load when the run started."""
    import ci_pool

    affinity = getattr(os, "sched_getaffinity", None)
    info: dict[str, Any] = {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "nproc_usable": len(affinity(0)) if affinity else None,
        "mem_total_mib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // MIB,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ci_pool": ci_pool.__version__,
    }
    for pkg, key in (
        ("celery", "celery"),
        ("kombu", "kombu"),
        ("redis", "redis_py"),
        ("sqlalchemy", "sqlalchemy"),
        ("docker", "docker_py"),
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
    ):
        info[key] = _package_version(pkg)
    info["redis_server"] = tool_version([redis_server_binary(), "--version"])
    info["git"] = tool_version(["git", "--version"])
    if tmp is not None:
        info["tmp_filesystem"] = tool_version(["df", "-hT", str(tmp)])
    info["loadavg_at_start"] = list(os.getloadavg())
    return info


# -- git over loopback ------------------------------------------------------------------------


@dataclass(frozen=True)
class GitRepo:
    """A bare repository served by a ``git daemon`` on loopback, at commit ``sha``."""

    daemon: GitDaemon
    path: Path
    url: str
    sha: str


class ByteCountingProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<upstream>, counting the bytes each way (threads), so a
    benchmark knows what an operation moved over the "network"."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.down = 0  # server -> client
        self.up = 0  # client -> server
        self.connections = 0
        self.active = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, name="proxy", daemon=True)
        self._accepter.start()

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                conn.close()
                continue
            # Forward each chunk at once: no Nagle delay added on top of git's own.
            for s in (conn, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                self.connections += 1
                self.active += 1
                self._socks.update((conn, upstream))
            pending = [2]
            for src, dst, up in ((conn, upstream, True), (upstream, conn, False)):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, up, pending), name="pump", daemon=True
                )
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool, pending: list[int]) -> None:
        try:
            while data := src.recv(1 << 18):
                with self._cond:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self._cond:
                pending[0] -= 1
                if pending[0] == 0:
                    for s in (src, dst):
                        s.close()
                        self._socks.discard(s)
                    self.active -= 1
                    self._cond.notify_all()

    def snapshot(self, timeout: float = 10) -> tuple[int, int, int]:
        """(up, down, connections) once no connection is open (all bytes counted)."""
        with self._cond:
            self._cond.wait_for(lambda: self.active == 0, timeout=timeout)
            return self.up, self.down, self.connections

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        self._accepter.join(timeout=5)
        with self._cond:
            for s in list(self._socks):
                try:
                    s.close()
                except OSError:
                    pass
            self._socks.clear()
        for t in self._threads:
            t.join(timeout=5)


# -- PostgreSQL ---------------------------------------------------------------------------


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1, run as a non-root user."""

    pg_ctl: str
    data: Path
    port: int
    driver: str
    uid: int | None
    gid: int | None
    version: str

    @property
    def url(self) -> str:
        return f"postgresql+{self.driver}://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.pg_ctl, "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.uid is not None else None,
        )

    def stop(self) -> None:
        res = self._run("-m", "fast", "-w", "-t", "30", "stop")
        if res.returncode != 0 and "not running" not in res.stderr + res.stdout:
            print(f"pg_ctl stop: {res.stderr.strip() or res.stdout.strip()}", flush=True)


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def start_postgres(pgdir: Path) -> tuple[Postgres | None, str]:
    """Start PostgreSQL if it can be done quickly here; else None and why not."""
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if not (initdb and pg_ctl):
        return None, "no initdb/pg_ctl on this machine"
    driver = ""
    for module, name in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        with contextlib.suppress(ImportError):
            __import__(module)
            driver = name
            break
    if not driver:
        return None, "no PostgreSQL driver (pip install 'psycopg[binary]')"
    uid = gid = None
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user to run the server"
        uid, gid = user.pw_uid, user.pw_gid
        os.chown(pgdir, uid, gid)
    data = pgdir / "data"
    version = subprocess.run([initdb, "--version"], capture_output=True, text=True).stdout
    init = subprocess.run(
        [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        user=uid,
        group=gid,
        extra_groups=[] if uid is not None else None,
    )
    if init.returncode != 0:
        return None, f"initdb failed: {init.stderr.strip()[-300:]}"
    pg = Postgres(pg_ctl, data, free_port(), driver, uid, gid, version.strip())
    opts = (
        f"-p {pg.port} -k {pgdir} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    res = pg._run("-o", opts, "-l", str(pgdir / "postgres.log"), "-w", "-t", "60", "start")
    if res.returncode != 0:
        log_text = (pgdir / "postgres.log").read_text(errors="replace")[-500:]
        return None, f"pg_ctl start failed: {res.stderr.strip()} {log_text}"
    return pg, ""


# -- the bench --------------------------------------------------------------------------------


def add_common_args(ap: argparse.ArgumentParser, name: str) -> None:
    """``--out``, ``--keep`` and ``--quick``, the same in every benchmark."""
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"JSON output (default results/{name}.json, results/quick/{name}.json with "
        "--quick); the PNG goes next to it with a .png suffix",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, store)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a small run that proves the benchmark works; written under results/quick/",
    )


@dataclass
class _Remover:
    path: Path
    keep: bool
    log: Callable[[str], None]

    def stop(self) -> None:
        if self.keep:
            self.log(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


class Bench:
    """One benchmark run: its temp dir, the services and processes it started (stopped
    newest first on the way out, whatever the way out), the machine record and the results.
    """

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.log = logger(name)
        self.tmp = Path("/nonexistent")
        self.machine: dict[str, Any] = {}
        self._stack: list[Stoppable] = []
        self._started = 0.0
        self._old_handler: Any = None

    def __enter__(self) -> Bench:
        self._old_handler = signal.signal(signal.SIGTERM, on_sigterm)
        for key in [k for k in os.environ if k.startswith("CI_POOL_")]:
            del os.environ[key]  # the caller's settings must not leak into load_settings()
        # Every git server of a benchmark listens on loopback, which a pool refuses by default.
        os.environ["CI_POOL_ALLOW_LOOPBACK_GIT"] = "1"
        self._started = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ci-pool-bench-{self.name}-"))
        self.machine = machine_info(self.tmp)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._stack:
            thing = self._stack.pop()
            try:
                thing.stop()
            except Exception as err:
                self.log(f"stopping {type(thing).__name__}: {err}")
        if getattr(self.args, "keep", False):
            self.log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, self._old_handler)

    @property
    def quick(self) -> bool:
        return bool(getattr(self.args, "quick", False))

    @property
    def runtime_s(self) -> float:
        return round(time.monotonic() - self._started, 1)

    def defer(self, thing: Stoppable) -> None:
        """Stop ``thing`` when the bench ends (newest first)."""
        self._stack.append(thing)

    def temp_dir(self, prefix: str) -> Path:
        """Another temp dir, outside ``tmp`` (for a server that runs as another user and
        cannot enter ``tmp``), removed with it."""
        path = Path(tempfile.mkdtemp(prefix=f"ci-pool-bench-{prefix}-"))
        self.defer(_Remover(path, bool(getattr(self.args, "keep", False)), self.log))
        return path

    # -- services

    def redis(self) -> RedisServer:
        server = RedisServer.start(self.tmp / "redis")
        self.defer(server)
        return server

    def postgres(self) -> tuple[Postgres | None, str]:
        """A throwaway PostgreSQL cluster on loopback (stopped with the bench), or None and
        why it could not start here."""
        pg, why = start_postgres(self.temp_dir("pg"))
        if pg is not None:
            self.defer(pg)
        return pg, why

    def git_repo(self, files: dict[str, str], name: str = "bench.git") -> GitRepo:
        """A bare repository with one commit of ``files``, served over git:// on loopback."""
        base = self.tmp / "git"
        base.mkdir(exist_ok=True)
        sha = make_repo(base / name, files)
        daemon = self.git_daemon(base)
        return GitRepo(daemon, base / name, daemon.url(name), sha)

    def git_daemon(self, base: Path) -> GitDaemon:
        daemon = GitDaemon.start(base)
        self.defer(daemon)
        return daemon

    def config(self, capability: str | None = None) -> Path:
        """A ci-pool.toml: the default capabilities, plus a host-mode ``capability`` (its own
        queue) when one is named, so no Docker is needed."""
        path = self.tmp / "ci-pool.toml"
        text = f"# written by bench/{self.name}.py\n"
        if capability:
            text += f'[capabilities.{capability}]\nmode = "host"\nqueue = "{capability}"\n'
        path.write_text(text)
        return path

    # -- processes

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> Proc:
        proc = spawn(name, cmd, env, self.tmp, self.tmp / f"{name}.log")
        self.defer(proc)
        return proc

    def workers(
        self,
        pool: Any,
        capability: str,
        envs: Sequence[dict[str, str]],
        *,
        tag: str = "worker",
        loglevel: str = "INFO",
        timeout: float = 60.0,
    ) -> list[Proc]:
        """``ci-pool worker --concurrency 1`` processes, one per environment, returned once
        each has registered in ``pool.runners(capability)``."""
        cmd = [sys.executable, "-m", "ci_pool", "worker", "--capability", capability,
               "--concurrency", "1", "--loglevel", loglevel]  # fmt: skip
        procs = [self.spawn(f"{tag}-w{slot}", cmd, env) for slot, env in enumerate(envs, start=1)]
        pids = {p.pid for p in procs}
        deadline = time.monotonic() + timeout
        while not pids <= {r.pid for r in pool.runners(capability)}:
            for p in procs:
                p.check(" at start")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers did not register in {timeout:.0f}s:\n{procs[0].tail()}"
                )
            time.sleep(0.05)
        return procs

    # -- results

    def out_path(self) -> Path:
        out: Path | None = getattr(self.args, "out", None)
        if out is not None:
            return out
        return (QUICK_DIR if self.quick else RESULTS_DIR) / f"{self.name}.json"

    def write(self, report: dict[str, Any], plot: Callable[[Path], None]) -> Path:
        """Write ``<name>.json`` (with the machine record, quick flag and runtime added) and
        ``<name>.png`` through ``plot(png_path)``, refresh summary.md beside them, and print
        this benchmark's section of it."""
        self.machine["loadavg_at_end"] = list(os.getloadavg())
        report = {
            "benchmark": self.name,
            "quick": self.quick,
            "machine": self.machine,
            **report,
            "runtime_s": self.runtime_s,
        }
        out = self.out_path()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        png = out.with_suffix(".png")
        plot(png)
        summary = refresh_summary(out.parent)
        self.log(f"wrote {out}, {png} and {summary}")
        print("\n" + summary_section(out.stem, report))
        return out


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


# -- summary.md -------------------------------------------------------------------------------


def _target_value(t: dict[str, Any]) -> Any:
    for key in ("value", "value_ms", "value_s", "value_bytes", "p95_ms"):
        if key in t:
            return t[key]
    return None


def summary_section(stem: str, report: dict[str, Any]) -> str:
    """One benchmark's part of summary.md: when and where it ran, its headline figures and
    whether each target held."""
    m = report.get("machine", {})
    when = m.get("recorded_at", "date not recorded")
    lines = [f"## {report.get('benchmark', stem)}", ""]
    lines.append(
        f"Run {when}{' (quick mode)' if report.get('quick') else ''}, "
        f"{report.get('runtime_s', '?')} s; {m.get('nproc', '?')} CPUs"
        f"{' (' + m['cpu'] + ')' if m.get('cpu') else ''}, Python {m.get('python', '?')}, "
        f"load {', '.join(f'{x:.1f}' for x in m.get('loadavg_at_start', [])) or '?'} at start. "
        f"[{stem}.json]({stem}.json), [{stem}.png]({stem}.png)."
    )
    headline = report.get("headline") or []
    if headline:
        lines.append("")
        lines += [f"- {h}" for h in headline]
    targets = report.get("targets") or {}
    if targets:
        lines.append("")
        for name, t in targets.items():
            holds = "holds" if t.get("holds") else "**missed**"
            lines.append(f"- target `{name}`: {holds} ({_target_value(t)})")
    return "\n".join(lines) + "\n"


def _target_goal(t: dict[str, Any]) -> Any:
    for key in ("target", "target_ms", "target_s", "target_bytes", "max_ms", "limit_s"):
        if key in t:
            return t[key]
    return None


def _fs_type(machine: dict[str, Any]) -> str:
    """The filesystem type from the recorded ``df -T`` line (device, type, sizes...)."""
    words = str(machine.get("tmp_filesystem") or "").split()
    return words[1] if len(words) > 1 and "Type" not in words[1] else (words[-1:] or ["?"])[0]


def _machine_line(reports: dict[str, dict[str, Any]]) -> str:
    newest = max(
        (r.get("machine", {}) for r in reports.values()),
        key=lambda m: str(m.get("recorded_at") or ""),
        default={},
    )
    mem = newest.get("mem_total_mib")
    return (
        f"Machine: {newest.get('nproc', '?')} CPUs ({newest.get('cpu', '?')}), "
        f"{round(mem / 1024, 1) if mem else '?'} GiB, {newest.get('platform', '?')}, "
        f"Python {newest.get('python', '?')}, temp dir on {_fs_type(newest)}. "
        "Each run's load average is in its section below: other work on the machine skews "
        "every figure.\n\n"
    )


def summary_table(order: list[str], reports: dict[str, dict[str, Any]], pngs: list[str]) -> str:
    """One table of every target: figure, target, measured value, held or missed."""
    rows = ["| benchmark | figure | target | measured | verdict |", "|---|---|---|---|---|"]
    for name in order:
        report = reports[name]
        when = (report.get("machine", {}).get("recorded_at") or "")[:16]
        quick = " (quick)" if report.get("quick") else ""
        for figure, t in (report.get("targets") or {}).items():
            verdict = "holds" if t.get("holds") else "**missed**"
            rows.append(
                f"| [{name}]({name}.json){quick} {when} | `{figure}` | {_target_goal(t)} | "
                f"{_target_value(t)} | {verdict} |"
            )
    for name in EXPECTED:
        if name not in reports:
            rows.append(f"| {name} | (bench/{name}.py) | | not run | |")
    links = ", ".join(f"[{p}]({p})" for p in pngs) or "none"
    return _machine_line(reports) + "\n".join(rows) + f"\n\nFigures: {links}.\n\n"


def refresh_summary(results_dir: Path) -> Path:
    """Rewrite ``summary.md`` from every ``*.json`` in ``results_dir``."""
    reports: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            reports[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    order = [n for n in SUMMARY_ORDER if n in reports] + sorted(
        n for n in reports if n not in SUMMARY_ORDER
    )
    text = (
        "# Benchmark results\n\n"
        "Written by bench/harness.py from the JSON files in this directory each time a "
        "benchmark finishes; see bench/README.md for what each number means.\n\n"
    )
    text += summary_table(order, reports, sorted(p.name for p in results_dir.glob("*.png")))
    text += "\n".join(summary_section(n, reports[n]) for n in order)
    path = results_dir / "summary.md"
    path.write_text(text)
    return path
