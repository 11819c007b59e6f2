"""What a runner moves through the API besides its job's state: artifacts (uploaded and
downloaded, named artifact sets), the sync payload, and the pool cache's archives."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

import httpx

from ci_pool.exceptions import InfraError
from ci_pool.store.artifact_sets import ArtifactSet
from ci_pool.store.models import Artifact
from ci_pool.store.wire import load_row
from ci_pool.worker.api_calls import RunnerApiCalls


class RunnerApiFiles(RunnerApiCalls):
    """Artifact, sync payload and cache transfers of a runner through the API."""

    def add_artifacts(
        self, job_id: str, attempt: int, files: Iterable[Any], name: str | None = None
    ) -> None:
        """Upload each collected file (copied under the runner's artifact root) with its
        sha256; the API checks it, stores the file and indexes it."""
        local = self.settings.resolved_artifact_root / job_id / str(attempt)
        for f in files:
            path = local / f.path
            params = {"path": f.path, "sha256": f.sha256, "size": str(f.size)}
            if name is not None:
                params["name"] = name
            with path.open("rb") as body:
                self._call(
                    "PUT",
                    f"/jobs/{job_id}/attempts/{attempt}/artifacts",
                    params=params,
                    content=_chunks(body),
                    headers={"Content-Length": str(f.size)},
                )
            path.unlink(missing_ok=True)  # the pool's copy is the one that counts

    def remove_artifacts(self, ids: Iterable[int]) -> None:
        where = self._current()
        for artifact_id in ids:
            self._call("DELETE", f"{where}/artifacts/{artifact_id}")

    def artifacts(self, job_id: str, attempt: int | None = None) -> list[Artifact]:
        rows = self._call("GET", f"{self._attempt(job_id)}/artifacts").json()["artifacts"]
        return [load_row(Artifact, r) for r in rows]

    def named_artifacts(self, pipeline_id: str | None, job_id: str, name: str) -> list[Artifact]:
        res = self._call("GET", f"{self._attempt(job_id)}/named-artifacts", params={"name": name})
        return [load_row(Artifact, r) for r in res.json()["artifacts"]]

    def artifact_names(self, pipeline_id: str | None, job_id: str) -> list[str]:
        res = self._call("GET", f"{self._attempt(job_id)}/artifact-names")
        return [str(n) for n in res.json()["names"]]

    def claim_artifact(
        self,
        run_id: str,
        job_id: str,
        attempt: int,
        name: str,
        expires_at: datetime,
        *,
        overwrite: bool,
    ) -> str | None:
        """Hold ``name`` in the run (the API derives the run from the claimed job)."""
        body = {"name": name, "expires_at": expires_at.isoformat(), "overwrite": overwrite}
        res = self._call("POST", f"{self._attempt(job_id)}/artifact-claims", json=body)
        holder = res.json()["holder"]
        return None if holder is None else str(holder)

    def release_artifact(self, run_id: str, name: str, job_id: str, attempt: int) -> None:
        self._call("DELETE", f"{self._attempt(job_id)}/artifact-claims", params={"name": name})

    def add_artifact_set(
        self, run_id: str, job_id: str, attempt: int, expires_at: datetime
    ) -> None:
        body = {"expires_at": expires_at.isoformat()}
        self._call("POST", f"{self._attempt(job_id)}/artifact-sets", json=body)

    def expired_named(self, run_id: str, name: str) -> ArtifactSet | None:
        res = self._call("GET", f"{self._in_run(run_id)}/expired-artifacts", params={"name": name})
        row = res.json()["expired"]
        return None if row is None else load_row(ArtifactSet, row)

    def open_artifact(self, job_id: str, row: Artifact) -> IO[bytes]:
        """A stored artifact file of this run, downloaded into a temporary file."""
        out = tempfile.TemporaryFile()
        try:
            self._download(f"{self._attempt(job_id)}/artifact-files/{row.id}", out)
        except BaseException:
            out.close()
            raise
        out.seek(0)
        return out

    def sync_payload(self, sha256: str) -> bytes | None:
        with self._lock:
            held = [
                j
                for j in self._claims.values()
                if j.checkout.sync is not None and j.checkout.sync.sha256 == sha256
            ]
        if not held:
            return None
        res = self._call("GET", f"/jobs/{held[-1].id}/attempts/{held[-1].attempt}/sync")
        data = res.content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise InfraError("the sync payload the API sent does not match its sha256")
        return data

    # -- the pool cache (``worker.cachestore.api``) --

    def cache_call(self, job_id: str, method: str, what: str, **kw: Any) -> httpx.Response:
        return self._call(method, f"{self._attempt(job_id)}/cache{what}", **kw)

    def cache_fetch(self, job_id: str, name: str, out: BinaryIO) -> bool:
        return self._download(f"{self._attempt(job_id)}/cache/archive", out, {"name": name})

    def cache_put(self, job_id: str, name: str, archive: Path) -> None:
        size = archive.stat().st_size
        with archive.open("rb") as body:
            self.cache_call(
                job_id,
                "PUT",
                "/archive",
                params={"name": name},
                content=_chunks(body),
                headers={"Content-Length": str(size)},
            )


def _chunks(fh: BinaryIO, size: int = 1024 * 1024) -> Iterable[bytes]:
    while chunk := fh.read(size):
        yield chunk
