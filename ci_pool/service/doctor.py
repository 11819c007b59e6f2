"""``ci-pool doctor``: is this machine ready to submit to and run the pool? Each check
says ok, warn or fail, what it found, and the command that fixes it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import sqlalchemy.exc
from sqlalchemy import inspect

from ci_pool import defaults
from ci_pool.settings import Settings


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"  # works, but something will bite later
    FAIL = "fail"  # the pool cannot work here until it is fixed


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: what was checked, its status, what was seen, and what fixes it."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


def redact(url: str) -> str:
    """``url`` with its password (if it has one) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def home_check(settings: Settings) -> Check:
    """Where this machine's pool lives: the home, its config file and the store."""
    from ci_pool.config_file import config_file_in_use
    from ci_pool.home import read_up_record

    config = config_file_in_use() or "none"
    up = read_up_record(settings.home)
    serving = f"; ci-pool up runs (pid {up.pid}, API {up.api_url})" if up else ""
    return Check(
        "home",
        Status.OK,
        f"home {settings.home.resolve()}, config {config}, store "
        f"{redact(settings.resolved_store_url)}{serving}",
    )


BROKER_FIX = (
    "start redis-server (or `ci-pool up`), or set CI_POOL_BROKER_URL to the pool's broker "
    "(redis://[:password@]host:port/db)"
)


def broker_check(settings: Settings) -> tuple[Check, redis.Redis | None]:
    """The broker answers PING with the configured URL and password."""
    url = redact(settings.broker_url)
    try:
        client = redis.Redis.from_url(
            settings.broker_url, socket_connect_timeout=3, socket_timeout=3
        )
        client.ping()
        try:
            version = client.info("server").get("redis_version", "?")
        except redis.exceptions.NoPermissionError:
            version = "?"  # a runner's own Redis user may not run INFO
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        if not isinstance(exc, redis.AuthenticationError) and not any(
            word in str(exc) for word in ("NOAUTH", "WRONGPASS", "authenticated")
        ):
            return Check("broker", Status.FAIL, f"{url} answered an error: {exc}", BROKER_FIX), None
        has_password = urlsplit(settings.broker_url).password is not None
        why = "refused the user or password in the URL" if has_password else "needs a password"
        return Check(
            "broker", Status.FAIL, f"{url} {why}",
            "put the broker's password in CI_POOL_BROKER_URL (redis://:PASSWORD@host:port/db, "
            "or redis://USER:PASSWORD@... for an ACL user)",
        ), None  # fmt: skip
    except (redis.RedisError, ValueError, OSError) as exc:
        return Check("broker", Status.FAIL, f"cannot reach {url}: {exc}", BROKER_FIX), None
    return Check("broker", Status.OK, f"{url} answers PING (Redis {version})"), client


def clock_check(client: redis.Redis) -> Check:
    """This machine's clock against the broker's ``TIME`` (leases and heartbeats compare
    times taken on different hosts)."""
    try:
        before = time.time()
        seconds, micros = client.time()
        after = time.time()
    except redis.RedisError as exc:
        return Check("clock", Status.WARN, f"the broker did not answer TIME: {exc}")
    skew = seconds + micros / 1e6 - (before + after) / 2
    detail = f"{skew:+.3f} s against the broker's clock"
    if abs(skew) > defaults.DOCTOR_CLOCK_SKEW_WARN:
        return Check(
            "clock", Status.WARN,
            f"{detail} (over {defaults.DOCTOR_CLOCK_SKEW_WARN:g} s): leases may expire early",
            "synchronise the clocks: timedatectl set-ntp true (chrony or systemd-timesyncd)",
        )  # fmt: skip
    return Check("clock", Status.OK, detail)


STORE_FIX = "ci-pool db upgrade"


def store_check(settings: Settings) -> Check:
    """The store answers and its schema is at this ci-pool's newest migration."""
    from ci_pool.store.engine import make_engine
    from ci_pool.store.migrate import HEAD, current

    url = settings.resolved_store_url
    shown = redact(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return Check("store", Status.FAIL, f"no store at {path} yet", STORE_FIX)
    try:
        engine = make_engine(url, writer=False)
        try:
            with engine.connect() as conn:
                revision = current(conn)
                has_jobs = inspect(conn).has_table("jobs")
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        why = getattr(exc, "orig", None) or exc
        return Check(
            "store", Status.FAIL, f"cannot open {shown}: {why}",
            "check CI_POOL_STORE_URL, that the database server runs and the user may log in",
        )  # fmt: skip
    if revision == HEAD:
        return Check("store", Status.OK, f"{shown} at migration {HEAD} (the newest)")
    if revision is None:
        what = "has tables from before migrations" if has_jobs else "has no schema"
        return Check("store", Status.FAIL, f"{shown} {what}", STORE_FIX)
    return Check(
        "store", Status.FAIL,
        f"{shown} is at migration {revision}; this ci-pool needs {HEAD}",
        f"{STORE_FIX} (a revision this ci-pool does not know means the store is newer: "
        "upgrade ci-pool instead)",
    )  # fmt: skip


def git_check() -> Check:
    """git is installed and recent enough for partial clones over protocol v2."""
    need = ".".join(map(str, defaults.GIT_MIN_VERSION))
    fix = f"install git >= {need} (Debian 12 ships 2.39: apt-get install git)"
    found = shutil.which("git")
    if not found:
        return Check("git", Status.FAIL, "git is not installed", fix)
    try:
        text = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        return Check("git", Status.FAIL, f"{found} --version failed: {exc}", fix)
    m = re.search(r"(\d+)\.(\d+)", text)
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if version < defaults.GIT_MIN_VERSION:
        return Check("git", Status.FAIL, f"{text.strip()} is older than {need}", fix)
    return Check("git", Status.OK, text.strip())


GIT_V2_FIX = (
    "upgrade the git server to git >= 2.18 and leave protocol.version unset there (v2 is "
    "the default since 2.26), or serve it with git daemon / git http-backend"
)


def git_protocol_checks(settings: Settings, urls: Iterable[str]) -> list[Check]:
    """Each git server of ``urls`` (one repository URL per server) answers ``git
    ls-remote`` over protocol v2 (what shallow, partial clones of one commit rely on):
    ok with v2, warn with v0/v1, fail when refused by ``git_hosts`` or unreachable."""
    from ci_pool.exceptions import CIPoolError
    from ci_pool.git import GitRunner, git_error
    from ci_pool.remotes import check_remote, remote_of

    checks: list[Check] = []
    seen: set[str] = set()
    for url in urls:
        remote = remote_of(url)
        host = remote.shown if remote is not None else url
        if host in seen:
            continue
        seen.add(host)
        name = f"git server {host}"
        try:
            check_remote(url, settings)
            git = GitRunner.for_settings(settings, url)
            git.env = {**git.env, "GIT_TRACE_PACKET": "1"}
            proc = git.run(
                "ls-remote", "--heads", "--end-of-options", url,
                check=False, timeout=settings.ref_lookup_timeout,
            )  # fmt: skip
        except CIPoolError as exc:
            fix = "add the host to git_hosts" if "git_hosts" in str(exc) else "check the URL"
            checks.append(Check(name, Status.FAIL, f"{url}: {exc}", fix))
            continue
        trace = [line for line in proc.stderr.splitlines() if "packet:" in line]
        said = "\n".join(line for line in proc.stderr.splitlines() if "packet:" not in line)
        if proc.returncode != 0:
            why = git.masker.mask(git_error(said))
            checks.append(
                Check(name, Status.FAIL, f"git ls-remote {url} failed: {why}",
                      "check the URL, the server and its credentials (git_credentials)")
            )  # fmt: skip
            continue
        if any(re.search(r"< version 2\b", line) for line in trace):
            checks.append(Check(name, Status.OK, f"{url} answers over git protocol v2"))
        else:
            checks.append(
                Check(name, Status.WARN,
                      f"{url} answers over protocol v0/v1 only: every fetch lists all refs "
                      "and one-commit clones are slower", GIT_V2_FIX)
            )  # fmt: skip
    return checks


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the file system it will be on)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def disk_checks(
    settings: Settings,
    warn_below: int = defaults.DOCTOR_DISK_WARN_BYTES,
    fail_below: int = defaults.DOCTOR_DISK_FAIL_BYTES,
) -> list[Check]:
    """Free space where jobs check out, mirrors are kept and artifacts are stored."""
    roots = {
        "workspace": settings.resolved_workspace_root,
        "mirrors": settings.resolved_mirror_root,
        "artifacts": settings.resolved_artifact_root,
    }
    checks = []
    gib = 1024**3
    for what, root in roots.items():
        free = shutil.disk_usage(_existing(root)).free
        detail = f"{free / gib:.1f} GiB free in {root}"
        setting = {"workspace": "workspace_root", "mirrors": "mirror_root"}.get(
            what, "artifact_root"
        )
        fix = f"free space there, or point {setting} at a larger disk"
        if free < fail_below:
            status = Status.FAIL
            detail += f" (under {fail_below / gib:g} GiB)"
        elif free < warn_below:
            status = Status.WARN
            detail += f" (under {warn_below / gib:g} GiB)"
        else:
            status, fix = Status.OK, ""
        checks.append(Check(f"disk {what}", status, detail, fix))
    return checks


def host_cgroup_check() -> Check:
    """Host-mode jobs are limited through cgroups: memory and pids controllers exist."""
    root = Path("/sys/fs/cgroup")
    unified = root / "cgroup.controllers"
    if unified.is_file():
        present = set(unified.read_text().split())
        where = "cgroup v2"
    else:
        present = {c for c in ("memory", "pids", "cpu") if (root / c).is_dir()}
        where = "cgroup v1"
    missing = [c for c in ("memory", "pids") if c not in present]
    if missing:
        return Check(
            "cgroups host", Status.FAIL,
            f"{where} lacks the {', '.join(missing)} controller(s): host-mode limits do not hold",
            "enable them (systemd.unified_cgroup_hierarchy=1; on Incus: security.nesting=true)",
        )  # fmt: skip
    return Check("cgroups host", Status.OK, f"{where}: memory and pids controllers present")


def run_checks(
    settings: Settings,
    *,
    runner: bool = True,
    bench: bool = True,
    capabilities: Iterable[str] = (),
    git_urls: Iterable[str] = (),
    store: Check | None = None,
) -> list[Check]:
    """Every check for a submitter and, with ``runner``, for a runner host of the named
    (default: every) capability. ``git_urls`` adds to the setting ``doctor_git_urls``: a
    repository on each git server to try over protocol v2. ``store`` replaces the store
    check (a runner that reaches the store through the API checks the API instead)."""
    checks = [home_check(settings)]
    broker, client = broker_check(settings)
    checks.append(broker)
    if client is not None:
        checks.append(clock_check(client))
        client.close()
    checks += [store or store_check(settings), git_check()]
    checks += git_protocol_checks(settings, [*settings.doctor_git_urls, *git_urls])
    if runner:
        from ci_pool.service.engine import engine_checks

        names = set(capabilities)
        caps = [c for c in settings.capabilities.values() if not names or c.name in names]
        checks += disk_checks(settings)
        checks += engine_checks(
            [c for c in caps if c.mode == "docker"], bench=bench, settings=settings
        )
        if any(c.mode == "host" for c in caps):
            checks.append(host_cgroup_check())
    return checks
