"""The image a container action runs: ``docker://image`` as named, or built on the runner
from the action's ``Dockerfile``, each image it uses checked against the capability first.

A built image is tagged by the hash of its build context (and of the base images' ids), so
the same action at the same content builds once per runner; it is labelled
``defaults.LABEL_ACTION_IMAGE`` for pruning. Each use stamps it under the runner's
workspace root (``.action-images/<hash>``); past ``action_images_max_count`` or
``action_images_max_bytes`` the least recently used images this runner stamped are removed
(``evict_images``), never the one just used, nor one whose build is under way (its build
lock is held), nor one a container still uses (the engine refuses to remove it).

The context is first copied out of the action's directory (which a job may write) without
following a link, regular files only and capped, so what was checked is what is built."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker.errors

from ci_pool import defaults
from ci_pool.core.capabilities import Capability
from ci_pool.core.dockerfile import base_images
from ci_pool.exceptions import ActionError, JobFileRefused
from ci_pool.worker.actions.call import ActionCall
from ci_pool.worker.actions.load import LoadedAction
from ci_pool.worker.executors.docker import ENGINE_ERRORS
from ci_pool.worker.jobfiles import JobDir

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def check_image(call: ActionCall, image: str, what: str) -> None:
    """Refuse ``image`` unless the job's capability allows it."""
    cap = call.att.cap
    if cap is None or cap.allows_image(image):
        return
    raise ActionError(
        f"action {call.ref}: {what} {image!r} is not allowed on capability {cap.name!r}, which "
        f"runs only its own image ({cap.image or 'none'}); use that image, or have an operator "
        "set allow_container_override = true on the capability"
    )


def present(client: Any, call: ActionCall, image: str) -> None:
    """The image must be on this runner (nothing is pulled by a job)."""
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ActionError(
            f"action {call.ref}: image {image!r} is not on this runner; pull or build it there"
        ) from None
    except ENGINE_ERRORS as exc:
        raise ActionError(f"action {call.ref}: the Docker engine failed: {exc}") from exc


class Budget:
    """What a copied build context may still hold, and the hash of what it holds."""

    def __init__(self) -> None:
        self.bytes = defaults.ACTION_CONTEXT_MAX_BYTES
        self.files = defaults.ACTION_CONTEXT_MAX_FILES
        self.digest = hashlib.sha256()

    def take(self, rel: str, size: int) -> None:
        self.files -= 1
        self.bytes -= size
        if self.files < 0 or self.bytes < 0:
            raise ActionError(
                f"the action's directory is larger than {defaults.ACTION_CONTEXT_MAX_FILES} "
                f"files or {defaults.ACTION_CONTEXT_MAX_BYTES} bytes (at {rel})"
            )


def copy_context(src: Path, dst: Path) -> str:
    """Copy the directory ``src`` into ``dst``: directories, regular files (mode kept) and
    links as links, nothing followed, nothing else; the hash of what was copied."""
    budget = Budget()
    try:
        fd = os.open(src, _DIR)
    except OSError as exc:
        raise ActionError(f"the action's directory cannot be read ({exc.strerror})") from None
    try:
        _copy_dir(fd, dst, "", budget, 0)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ActionError(
            f"the action's directory cannot be copied: {exc.strerror}{where}"
        ) from None
    finally:
        os.close(fd)
    return budget.digest.hexdigest()


def _copy_dir(fd: int, dst: Path, rel: str, budget: Budget, depth: int) -> None:
    if depth > 32:
        raise ActionError(f"the action's directory is nested too deep (at {rel})")
    for entry in sorted(os.scandir(fd), key=lambda e: e.name):
        name, where = entry.name, f"{rel}{entry.name}"
        st = entry.stat(follow_symlinks=False)
        budget.take(where, st.st_size if stat.S_ISREG(st.st_mode) else 0)
        if stat.S_ISDIR(st.st_mode):
            (dst / name).mkdir()
            budget.digest.update(f"d {where}\0".encode())
            sub = os.open(name, _DIR, dir_fd=fd)
            try:
                _copy_dir(sub, dst / name, where + "/", budget, depth + 1)
            finally:
                os.close(sub)
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=fd)
            os.symlink(target, dst / name)
            budget.digest.update(f"l {where}\0{target}\0".encode())
        elif stat.S_ISREG(st.st_mode):
            _copy_file(fd, name, dst / name, where, budget)


def _copy_file(fd: int, name: str, out: Path, where: str, budget: Budget) -> None:
    src = os.open(name, _FILE, dir_fd=fd)
    with os.fdopen(src, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        budget.digest.update(f"f {where}\0{mode:o}\0".encode())
        data = fh.read(st.st_size + 1)[: st.st_size]
    budget.digest.update(data)
    out.write_bytes(data)
    out.chmod(mode)


def build(client: Any, call: ActionCall, loaded: LoadedAction, dockerfile: str) -> str:
    """The image built from the action's ``dockerfile`` (relative to its directory), or the
    one built earlier from the same content; its tag."""
    cap = call.att.cap
    assert cap is not None
    with tempfile.TemporaryDirectory(prefix="ci-pool-action-") as tmp:
        digest = hashlib.sha256(copy_context(loaded.directory, Path(tmp)).encode())
        try:
            with JobDir(Path(tmp)) as top:
                text = top.read(dockerfile, defaults.MAX_WORKFLOW_BYTES).decode()
        except (JobFileRefused, UnicodeDecodeError) as exc:
            raise ActionError(f"action {call.ref}: {exc}") from None
        try:
            bases = base_images(text, f"{call.ref}/{dockerfile}")
        except ValueError as exc:
            raise ActionError(f"action {exc}") from None
        for base in bases:
            check_image(call, base, f"{dockerfile} uses image")
            present(client, call, base)
            digest.update(str(client.images.get(base).id).encode())
        tag = f"{defaults.ACTION_IMAGE_REPOSITORY}:{digest.hexdigest()[:40]}"
        # Jobs on this runner that need the same image wait for one build of it.
        with _build_lock(call, tag):
            stamp(_runner_root(call), tag)
            if _exists(client, call, tag):
                call.line(f"##[ci-pool] action {call.ref}: image {tag} (built earlier)")
                return tag
            call.line(f"##[ci-pool] action {call.ref}: building {tag} from {dockerfile}")
            _build(client, call, cap, tmp, dockerfile, tag)
    settings = call.att.settings
    if settings is not None:
        for gone in evict_images(
            client,
            _runner_root(call),
            tag,
            settings.action_images_max_count,
            settings.action_images_max_bytes,
        ):
            call.line(f"##[ci-pool] removed the least recently used action image {gone}")
    return tag


def _runner_root(call: ActionCall) -> Path:
    settings = call.att.settings
    return settings.resolved_workspace_root if settings is not None else Path(tempfile.gettempdir())


def stamp(root: Path, tag: str) -> None:
    """Record that this runner used ``tag`` now."""
    stamps = root / defaults.ACTION_IMAGE_STAMPS
    stamps.mkdir(parents=True, exist_ok=True)
    path = stamps / tag.rsplit(":", 1)[-1]
    path.touch()
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def evict_images(client: Any, root: Path, keep: str, max_count: int, max_bytes: int) -> list[str]:
    """Remove the least recently used action images this runner stamped, past the bounds;
    the tags removed. ``keep`` (the one just used), an image being built and one a
    container uses are never removed."""
    stamps = root / defaults.ACTION_IMAGE_STAMPS
    try:
        entries = sorted(stamps.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return []
    count, total, removed = 0, 0, list[str]()
    for path in entries:
        tag = f"{defaults.ACTION_IMAGE_REPOSITORY}:{path.name}"
        try:
            size = int(client.images.get(tag).attrs.get("Size") or 0)
        except docker.errors.ImageNotFound:
            path.unlink(missing_ok=True)
            continue
        except ENGINE_ERRORS:
            return removed  # the engine is down: the next build tries again
        if tag == keep or (count < max_count and total + size <= max_bytes):
            count, total = count + 1, total + size
            continue
        if _remove_image(client, root, tag):
            path.unlink(missing_ok=True)
            removed.append(tag)
        else:
            count, total = count + 1, total + size
    return removed


def _remove_image(client: Any, root: Path, tag: str) -> bool:
    """Remove ``tag`` unless its build is under way or a container uses it."""
    lock = root / f".ci-pool-build-{tag.rsplit(':', 1)[-1]}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            client.images.remove(tag)  # no force: refused while a container uses it
        except docker.errors.ImageNotFound:
            return True
        except ENGINE_ERRORS:
            return False
        return True
    finally:
        os.close(fd)


def _exists(client: Any, call: ActionCall, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except ENGINE_ERRORS as exc:
        raise ActionError(f"action {call.ref}: the Docker engine failed: {exc}") from exc
    return True


@contextmanager
def _build_lock(call: ActionCall, tag: str) -> Iterator[None]:
    """An exclusive lock on building ``tag`` among the workers sharing this runner's
    workspace root."""
    root = _runner_root(call)
    root.mkdir(parents=True, exist_ok=True)
    name = f".ci-pool-build-{tag.rsplit(':', 1)[-1]}.lock"
    fd = os.open(root / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _build(client: Any, call: ActionCall, cap: Capability, path: str, file: str, tag: str) -> None:
    try:
        for item in client.api.build(
            path=path,
            dockerfile=file,
            tag=tag,
            labels={defaults.LABEL_ACTION_IMAGE: str(call.ref)},
            rm=True,
            forcerm=True,
            pull=False,
            network_mode=cap.network,
            decode=True,
        ):
            if "error" in item:
                raise ActionError(
                    f"action {call.ref}: building its image failed: {str(item['error']).strip()}"
                )
            for line in str(item.get("stream", "")).splitlines():
                if line.strip():
                    call.line(line)
    except ENGINE_ERRORS as exc:
        raise ActionError(f"action {call.ref}: building its image failed: {exc}") from exc
