"""``actions/cache``, ``actions/cache/restore`` and ``actions/cache/save``, built in, over
the pool cache (``worker.cachestore``, over ``ci_pool.cachestore``).

Entries are scoped as GitHub Actions scopes them: a job restores what its own ref saved,
then (a pull request) what its base branch saved, then what the default branch saved; it
saves only under its own ref. Within a scope, ``key`` matches exactly first, then as a
prefix, then each of ``restore-keys`` as a prefix, the most recently used entry winning.
An entry also carries a version made of its paths, so the same key with other paths is
another entry. Names: ``v1/<repo>/<scope>/<version>/<key, percent-encoded>``."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from ci_pool import defaults
from ci_pool.exceptions import AccessDenied, ActionError, ConfigError, InfraError, InputError
from ci_pool.settings import Settings
from ci_pool.worker import artifacts, cache_archive
from ci_pool.worker.actions.call import ActionCall, PostStep, builtin
from ci_pool.worker.actions.workspace_paths import Paths, workspace_paths
from ci_pool.worker.cachestore import CacheBackend, CacheEntry, open_backend

#: Longest encoded key an object name may end with (S3 keys are at most 1024 bytes).
_ENCODED_KEY_MAX = 900


@dataclass(frozen=True)
class CacheRequest:
    """What one cache step asks for."""

    key: str
    restore_keys: tuple[str, ...]
    paths: Paths
    repo: str
    #: Refs whose entries may be restored, in order; the first is where saves go.
    scopes: tuple[str, ...]
    version: str

    def prefix(self, scope: str) -> str:
        return "/".join((defaults.CACHE_LAYOUT, self.repo, _digest(scope, 16), self.version, ""))

    def name(self, scope: str, key: str) -> str:
        return self.prefix(scope) + quote(key, safe="")


def _digest(text: str, size: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:size]


def _check_key(key: str, what: str) -> str:
    if not key:
        raise ActionError(f"input {what} is required")
    if "," in key or len(key) > defaults.CACHE_KEY_MAX:
        raise ActionError(
            f"input {what}: {key[:80]!r} is not a valid cache key; use up to "
            f"{defaults.CACHE_KEY_MAX} characters without commas"
        )
    if len(quote(key, safe="")) > _ENCODED_KEY_MAX:
        raise ActionError(f"input {what}: {key[:80]!r} is too long once encoded; shorten it")
    return key


def _scopes(call: ActionCall, settings: Settings) -> tuple[str, ...]:
    """The refs this job may restore from, its own first."""
    github = call.ctx["github"]
    event = github.get("event") or {}
    repository = event.get("repository") if isinstance(event, dict) else None
    default = (repository or {}).get("default_branch") if isinstance(repository, dict) else None
    own = str(github.get("ref") or github.get("sha") or "")
    refs = [own]
    if github.get("base_ref"):
        refs.append(f"refs/heads/{github['base_ref']}")
    refs.append(f"refs/heads/{default or settings.cache_default_branch}")
    return tuple(dict.fromkeys(r for r in refs if r))


def _request(call: ActionCall, settings: Settings) -> CacheRequest:
    key = _check_key(call.input("key").strip(), "key")
    restore_keys = tuple(
        _check_key(line.strip(), "restore-keys")
        for line in call.input("restore-keys").splitlines()
        if line.strip()
    )
    if len(restore_keys) > defaults.CACHE_MAX_RESTORE_KEYS:
        raise ActionError(f"input restore-keys: at most {defaults.CACHE_MAX_RESTORE_KEYS} keys")
    paths = workspace_paths(call, call.input("path"), "path")
    version = _digest("\n".join((*paths.include, "!", *paths.exclude)), 16)
    return CacheRequest(
        key,
        restore_keys,
        paths,
        _digest(call.att.job.repo, 20),
        _scopes(call, settings),
        version,
    )


def _flag(call: ActionCall, name: str) -> bool:
    value = call.input(name).strip().lower() or "false"
    if value not in ("true", "false"):
        raise ActionError(f"input {name}: {value!r} is not true or false")
    return value == "true"


def find_entry(backend: CacheBackend, req: CacheRequest) -> tuple[CacheEntry, str] | None:
    """The entry to restore and the key it was saved under, or None."""
    for scope in req.scopes:
        base = req.prefix(scope)
        primary = req.name(scope, req.key)
        exact = [e for e in backend.find(primary) if e.name == primary]
        if exact:
            return exact[0], req.key
        for key in (req.key, *req.restore_keys):
            found = backend.find(req.name(scope, key))
            if found:
                best = max(found, key=lambda e: e.used_at)
                return best, _key_of(best.name, base)
    return None


def _key_of(name: str, base: str) -> str:
    return unquote(name[len(base) :])


def _settings(call: ActionCall) -> Settings:
    assert call.att.settings is not None
    return call.att.settings


def _workspace(call: ActionCall) -> Path:
    if call.att.workspace is None:
        raise ActionError("this job has no workspace on the runner")
    return call.att.workspace


def restore(call: ActionCall, backend: CacheBackend, req: CacheRequest) -> bool:
    """Restore the best entry (unless ``lookup-only``); set the outputs; whether the
    primary key matched exactly."""
    settings = _settings(call)
    call.outputs["cache-primary-key"] = req.key
    found = find_entry(backend, req)
    if found is None:
        call.outputs["cache-hit"] = "false"
        call.outputs["cache-matched-key"] = ""
        keys = ", ".join((req.key, *req.restore_keys))
        if _flag(call, "fail-on-cache-miss"):
            raise ActionError(
                "Failed to restore cache entry. Exiting as fail-on-cache-miss is set. "
                f"Input key: {req.key}"
            )
        call.line(f"Cache not found for input keys: {keys}")
        return False
    entry, key = found
    hit = key == req.key
    call.outputs["cache-hit"] = "true" if hit else "false"
    call.outputs["cache-matched-key"] = key
    if _flag(call, "lookup-only"):
        call.line(f"Cache found and can be restored from key: {key}")
        return hit
    with tempfile.TemporaryFile() as tmp:
        if not backend.fetch(entry.name, tmp):
            call.line(f"Cache not found for input keys: {key} (removed meanwhile)")
            call.outputs["cache-hit"] = "false"
            call.outputs["cache-matched-key"] = ""
            return False
        tmp.seek(0)
        files, size = cache_archive.unpack(
            tmp,
            _workspace(call),
            settings.cache_entry_max_bytes,
            settings.cache_entry_max_files,
        )
    backend.touch(entry.name)
    call.line(f"Cache restored from key: {key} ({files} files, {size} bytes)")
    return hit


def save(call: ActionCall, backend: CacheBackend, req: CacheRequest) -> None:
    """Save the paths under the primary key in the job's own scope, then evict."""
    settings = _settings(call)
    name = req.name(req.scopes[0], req.key)
    if any(e.name == name for e in backend.find(name)):
        call.line(f"Cache already exists for key: {req.key}; not saved again")
        return
    sel = artifacts.Selection(
        req.paths.include, req.paths.exclude, max_files=settings.cache_entry_max_files
    )
    with tempfile.NamedTemporaryFile(suffix=".tar") as tmp:
        packed = cache_archive.pack(
            _workspace(call),
            sel,
            tmp,
            settings.cache_compression,
            settings.cache_entry_max_bytes,
        )
        tmp.flush()
        for note in packed.skipped:
            call.line(f"##[warning]cache: {note}; not saved")
        if packed.files == 0:
            where = ", ".join(req.paths.include)
            call.line(f"##[warning]Path Validation Error: no files to cache in {where}; not saved")
            return
        stored = Path(tmp.name).stat().st_size
        if stored > settings.cache_max_bytes:
            call.line(
                f"##[warning]Cache of {stored} bytes is larger than the cache_max_bytes "
                f"limit of {settings.cache_max_bytes}; not saved"
            )
            return
        backend.put(name, Path(tmp.name))
    removed = backend.evict(settings.cache_max_bytes, defaults.CACHE_LAYOUT)
    call.line(
        f"Cache saved with key: {req.key} ({packed.files} files, {stored} bytes, "
        f"{settings.cache_compression})"
    )
    if removed:
        call.line(
            f"cache: {len(removed)} least recently used entries removed to stay under "
            f"{settings.cache_max_bytes} bytes"
        )


#: What the pool cache raises when it cannot be reached or is misconfigured: a warning, the
#: job goes on (as Actions does when its cache service fails).
_UNAVAILABLE = (InfraError, ConfigError, AccessDenied, InputError)


def _backend(call: ActionCall, settings: Settings) -> CacheBackend:
    """The pool cache as this job reaches it (through the API on an API runner)."""
    return open_backend(settings, call.files.store, call.att.job.id)


def _cache_step(call: ActionCall) -> int:
    """``actions/cache``: restore now; save in a post step when the key missed and the
    job succeeded."""
    settings = _settings(call)
    req = _request(call, settings)
    try:
        backend = _backend(call, settings)
        hit = restore(call, backend, req)
    except _UNAVAILABLE as exc:
        call.line(f"##[warning]Failed to restore: {exc}")
        call.outputs.setdefault("cache-hit", "false")
        return 0
    if hit:
        return 0

    def post(status: str) -> int:
        if status != "success":
            call.line("Cache not saved: the job did not succeed")
            return 0
        try:
            save(call, backend, req)
        except _UNAVAILABLE as exc:
            call.line(f"##[warning]Failed to save: {exc}")
        except ActionError as exc:
            call.line(f"##[warning]{exc}")
        return 0

    call.att.posts.append(PostStep(f"cache {req.key}", post))
    return 0


def _restore_step(call: ActionCall) -> int:
    settings = _settings(call)
    req = _request(call, settings)
    try:
        restore(call, _backend(call, settings), req)
    except _UNAVAILABLE as exc:
        call.line(f"##[warning]Failed to restore: {exc}")
        call.outputs.setdefault("cache-hit", "false")
    return 0


def _save_step(call: ActionCall) -> int:
    settings = _settings(call)
    req = _request(call, settings)
    try:
        save(call, _backend(call, settings), req)
    except _UNAVAILABLE as exc:
        call.line(f"##[warning]Failed to save: {exc}")
    return 0


@builtin(
    "actions/cache",
    # enableCrossOsArchive only matters on Windows runners, upload-chunk-size to the
    # real action's transfers; neither changes what is saved or restored here.
    inputs=(
        "key",
        "path",
        "restore-keys",
        "fail-on-cache-miss",
        "lookup-only",
        "enableCrossOsArchive",
        "upload-chunk-size",
    ),
)
def cache(call: ActionCall) -> int:
    """``actions/cache``, ``actions/cache/restore`` or ``actions/cache/save``."""
    steps = {"": _cache_step, "restore": _restore_step, "save": _save_step}
    step = steps.get(call.ref.path.strip("/").lower())
    if step is None:
        raise ActionError(
            f"{call.ref}: actions/cache has no action {call.ref.path!r}; use actions/cache, "
            "actions/cache/restore or actions/cache/save"
        )
    return step(call)
