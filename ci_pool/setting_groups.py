"""The fields of ``Settings``, one class per area; ``ci_pool.settings.Settings`` inherits
them all. Each area keeps its own field validators and derived paths; checks across areas
are ``Settings``'s."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from ci_pool import defaults
from ci_pool.addresses import check_host_pattern, is_ip, refusal, split_host_port
from ci_pool.core.capabilities import Capability, merge_capabilities
from ci_pool.core.forges import Forge
from ci_pool.home import default_home


class HomeSettings(BaseModel):
    """The home and what lives under it by default: the store, workspaces, artifacts."""

    #: One per user or machine (see ci_pool/home.py): $XDG_DATA_HOME/ci-pool by default.
    home: Path = Field(default_factory=default_home)
    #: SQLAlchemy URL; SQLite under ``home`` when unset.
    store_url: str = ""
    workspace_root: Path | None = None
    #: Where collected artifacts are kept (default: ``home/artifacts``).
    artifact_root: Path | None = None
    #: Bytes of artifacts collected per job attempt; past it collection stops and says so.
    artifact_max_bytes: int = Field(default=defaults.ARTIFACT_MAX_BYTES, ge=1)
    #: Log kept per attempt (bytes); past it the middle is dropped behind a marker.
    log_max_bytes: int = Field(default=defaults.LOG_MAX_BYTES, ge=1024)
    #: Host jobs without actions keep their step scripts, event file and step files on a
    #: tmpfs of ``job_scratch_bytes`` each runner process mounts (needs root; else, or when
    #: off, under the attempt's directory).
    job_scratch: bool = True
    job_scratch_bytes: int = Field(default=defaults.JOB_SCRATCH_BYTES, ge=1024 * 1024)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.home / defaults.STORE_FILE).resolve()}"

    @property
    def resolved_workspace_root(self) -> Path:
        return (self.workspace_root or self.home / "workspaces").resolve()

    @property
    def resolved_artifact_root(self) -> Path:
        return (self.artifact_root or self.home / "artifacts").resolve()


class CheckoutSettings(HomeSettings):
    """Checkouts and the git servers the pool contacts: mirrors, cached trees, credentials,
    allowed hosts, ref look-ups at submit."""

    #: Per-runner bare mirrors used as ``--reference`` for checkouts (default ``home/mirrors``).
    mirror_root: Path | None = None
    #: Check out from a local mirror of each repository (fetched and pruned per job) instead
    #: of a shallow clone over the network.
    mirror_cache: bool = False
    #: Keep pristine trees of recent commits per runner; a job at a cached commit gets a
    #: copy of the tree instead of a checkout.
    tree_cache: bool = True
    tree_cache_size: int = Field(default=8, ge=1)
    tree_root: Path | None = None
    #: Serve a cached tree as an overlayfs workspace (the pristine tree as the lower layer,
    #: the job's writes in its own upper layer): one mount, whatever the tree's size. Needs
    #: root and overlayfs; without them, or when off, the tree is copied.
    tree_overlay: bool = True
    #: Trees smaller than this (bytes of their files) are copied rather than overlaid (0, the
    #: default: never; the overlay's unmount runs off the job's path and costs less CPU).
    tree_overlay_min_bytes: int = Field(default=defaults.TREE_OVERLAY_MIN_BYTES, ge=0)
    #: Partial-clone filter for network checkouts ("" to fetch blobs with the commit).
    checkout_filter: str = "blob:none"
    #: Git credentials by URL prefix: prefix -> "env:VAR" or "file:/path" holding
    #: "user:token" (or a bare token). Sent as an HTTP header, never in a URL or the store.
    git_credentials: dict[str, str] = Field(default_factory=dict)
    #: Allow ``file://`` and local-path repositories (tests, demo); off by default.
    allow_local_repos: bool = False
    #: Git servers the pool contacts (ref look-ups at submit, webhooks, checkouts), as
    #: "host", "host:port", "*.example.com" or "*", matched against the URL git actually
    #: uses (after ``git_url_rewrites``). Link-local (169.254/16, fe80::/10) and cloud
    #: metadata addresses are always refused; loopback only with ``allow_loopback_git``.
    git_hosts: list[str] = Field(default_factory=lambda: list(defaults.GIT_HOSTS))
    #: Allow git servers on loopback addresses (127.0.0.0/8, ::1): a one-host pool, tests.
    allow_loopback_git: bool = False
    #: Ref look-ups at submit running at once in one API process; past it a submit waits
    #: ``ref_lookup_wait`` seconds for a slot, then is answered 503 (busy, retry).
    ref_lookup_concurrency: int = Field(default=defaults.REF_LOOKUP_CONCURRENCY, ge=1)
    ref_lookup_wait: float = Field(default=defaults.REF_LOOKUP_WAIT, ge=0)
    #: Seconds a git server has to answer a ref look-up at submit.
    ref_lookup_timeout: float = Field(default=defaults.LS_REMOTE_TIMEOUT, gt=0)
    #: ``url.<internal>.insteadOf=<public>``: maps public URL prefixes to the internal git server.
    git_url_rewrites: dict[str, str] = Field(default_factory=dict)
    #: Resolve the ref to a commit at submit time (``git ls-remote``).
    resolve_refs: bool = True
    #: A repository URL on each git server ``doctor`` tries over git protocol v2.
    doctor_git_urls: list[str] = Field(default_factory=list)

    @field_validator("git_hosts")
    @classmethod
    def _git_hosts(cls, value: list[str]) -> list[str]:
        return [check_host_pattern(p) for p in value]

    @property
    def resolved_tree_root(self) -> Path:
        return (self.tree_root or self.home / "trees").resolve()

    @property
    def resolved_mirror_root(self) -> Path:
        return (self.mirror_root or self.home / "mirrors").resolve()


class BrokerSettings(BaseModel):
    """The broker, leases, retries and the periodic sweeps; Flower."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    lease_ttl: float = Field(default=defaults.LEASE_TTL, gt=0)
    heartbeat_interval: float = Field(default=defaults.HEARTBEAT_INTERVAL, gt=0)
    runner_ttl: float = Field(default=defaults.RUNNER_TTL, gt=0)
    max_attempts: int = Field(default=defaults.MAX_ATTEMPTS, ge=1)
    retry_backoff: float = Field(default=defaults.RETRY_BACKOFF, ge=0)
    max_job_timeout: int = Field(default=defaults.MAX_JOB_TIMEOUT, gt=0)
    visibility_timeout: int = Field(default=defaults.VISIBILITY_TIMEOUT, gt=0)
    #: How often a worker looks for unacknowledged messages past the visibility timeout.
    restore_interval: float = Field(default=10.0, gt=0)
    #: Seconds between reaper sweeps (``ci-pool beat``).
    reap_interval: float = Field(default=15.0, gt=0)
    #: A queued job whose message is missing this long is sent again.
    resend_after: float = Field(default=10.0, ge=0)
    #: A queued job's message delivered this long ago without a claim belongs to a dead
    #: worker and is sent again (above the longest retry countdown a worker holds).
    resend_unacked_after: float = Field(default=90.0, ge=0)
    #: Flower's "user:password" (``CI_POOL_FLOWER_AUTH``); Flower refuses to start without it.
    flower_auth: SecretStr | None = None
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_address: str = "127.0.0.1"
    #: Celery task events (README "Task events and Flower"). On: workers send task events
    #: and submitters a task-sent event, so Flower's task view has every job from the moment
    #: it is sent. Off: neither, until Flower (or ``celery control enable_events``) asks: a
    #: running Flower turns the workers' task events back on within seconds, and jobs appear
    #: there from "received". Off saves a Redis publish per submit and every job's events.
    task_events: bool = True
    #: How far back the metrics' duration histograms look (seconds).
    metrics_window: float = Field(default=3600.0, gt=0)
    stop_grace: float = Field(default=defaults.STOP_GRACE, ge=0)


class ApiSettings(BaseModel):
    """The API as clients reach it (CLI, runners) and as ``ci-pool api`` serves it."""

    #: CLI: talk to this API (``CI_POOL_API_URL``) instead of the local store and broker.
    api_url: str = ""
    #: CLI: the bearer token for ``api_url`` (``CI_POOL_API_TOKEN``).
    api_token: SecretStr | None = None
    #: CLI: sign submissions with this key id and key ("env:VAR" or "file:/path").
    sign_key_id: str = ""
    sign_key: str = ""
    #: HMAC keys for signed submissions: key id -> "env:VAR" or "file:/path". One submitter
    #: may hold several ids at once (rotation: add the new id, move over, drop the old one).
    signing_keys: dict[str, str] = Field(default_factory=dict)
    #: Bytes of one API request body (413 past it); ``/v1/pipelines`` takes twice this.
    max_body_bytes: int = Field(default=defaults.MAX_BODY_BYTES, ge=1024)
    #: Bytes of one ``--sync`` payload (the patch, or the gzipped snapshot); a snapshot
    #: unpacks to at most SYNC_UNPACK_FACTOR times this.
    sync_max_bytes: int = Field(default=defaults.SYNC_MAX_BYTES, ge=1024)

    # API over TLS. ``ci-pool api`` and ``up`` serve https with ``api_tls_cert`` and
    # ``api_tls_key`` (PEM files); the CLI and runners check an https ``api_url`` against
    # ``api_ca_file`` (a PEM bundle), else against the system's CA store.
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    api_ca_file: Path | None = None


class WorkflowSettings(BaseModel):
    """What workflows may ask for: capabilities, jobs per pipeline, configuration vars."""

    #: Jobs one pipeline may have, matrix cells counted; a workflow with more is refused.
    max_jobs_per_pipeline: int = Field(default=defaults.MAX_JOBS_PER_PIPELINE, ge=1)
    #: ``[vars]``: configuration variables, read by workflows as ``vars.NAME`` (names like
    #: environment variable names; each value at most MAX_VAR_VALUE_BYTES).
    vars: dict[str, str] = Field(default_factory=dict, max_length=defaults.MAX_VARS)
    capabilities: dict[str, Capability] = Field(
        default_factory=lambda: {n: Capability(**d) for n, d in merge_capabilities(None).items()}
    )
    #: The capability of workflow jobs whose only label is ``self-hosted`` (None: refused).
    default_capability: str | None = None

    @field_validator("capabilities", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("must be a table of [capabilities.<name>] tables")
        return merge_capabilities(value)

    @field_validator("vars")
    @classmethod
    def _vars(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", name):
                raise ValueError(
                    f"{name!r} is not a variable name: letters, digits and _, not starting "
                    "with a digit"
                )
            if len(text.encode()) > defaults.MAX_VAR_VALUE_BYTES:
                raise ValueError(f"{name}: the value is over {defaults.MAX_VAR_VALUE_BYTES} bytes")
        return value


class TriggerSettings(BaseModel):
    """Webhooks, pull requests, schedules and commit statuses on the forge."""

    #: Webhook secrets by provider ("gitea", "github"): "env:VAR" or "file:/path". A provider
    #: without a secret refuses every delivery.
    webhook_secrets: dict[str, str] = Field(default_factory=dict)
    #: The same push (provider, repository, ref, before, after) delivered again within this
    #: many seconds, under any delivery id, is refused (409) and starts nothing.
    webhook_replay_window: float = Field(default=defaults.WEBHOOK_REPLAY_WINDOW, gt=0)
    # -- triggers: pull requests and schedules --
    #: Capabilities a pull request's jobs may run on; unset: every capability that is not
    #: strict (privileged, host mode, signed-only, or with a repos/refs allowlist). A job
    #: of a pull request routed elsewhere is ``rejected`` with the reason.
    pull_request_capabilities: list[str] | None = None
    #: Whether a pull request's jobs receive capability secrets (off: none at all).
    pull_request_secrets: bool = False
    #: A schedule slot this many seconds old is still started by ``beat`` (one that beat
    #: was down for longer is skipped, as GitHub skips it).
    schedule_catchup: float = Field(default=defaults.SCHEDULE_CATCHUP, ge=60, le=86400)
    # Commit statuses on the forge (README "Results on the forge").
    #: ``[forges."<host>"]`` by the host (or ``host:port``) of the repository URLs: kind,
    #: api_url and token ("env:VAR" or "file:/path"). Hosts must be in ``git_hosts``.
    forges: dict[str, Forge] = Field(default_factory=dict)
    #: The URL users reach the API at; a commit status links to the job there.
    public_url: str = ""
    #: Posts of one status before it is given up, the wait before the second one (doubled
    #: for each next one), and the seconds a forge has to answer one post.
    status_attempts: int = Field(default=defaults.STATUS_ATTEMPTS, ge=1, le=20)
    status_backoff: float = Field(default=defaults.STATUS_BACKOFF, ge=0)
    status_timeout: float = Field(default=defaults.STATUS_TIMEOUT, gt=0)


class ArtifactSettings(HomeSettings):
    """Artifacts of ``actions/upload-artifact``, the pool cache of ``actions/cache``, and how
    long uploads are kept (README "Artifacts and caches in workflows")."""

    #: Files one ``actions/upload-artifact`` step may store.
    artifact_max_files: int = Field(default=defaults.ARTIFACT_MAX_FILES, ge=1)
    #: The pool cache of ``actions/cache`` on one host (default: ``home/cache``); runners on
    #: several hosts share an S3 bucket instead (``cache_url``).
    cache_dir: Path | None = None
    #: ``s3://bucket/prefix``: the pool cache in an S3-compatible bucket (empty: ``cache_dir``).
    cache_url: str = ""
    #: The S3 endpoint (an S3-compatible server such as MinIO or Ceph); empty: AWS.
    cache_s3_endpoint: str = ""
    cache_s3_region: str = defaults.CACHE_S3_REGION
    #: ``env:VAR`` or ``file:/path`` holding ``ACCESS_KEY:SECRET_KEY``; empty: boto3's own
    #: credential chain (environment, instance profile).
    cache_s3_credentials: str = ""
    #: Bytes the pool cache may hold; past it the least recently used entries are removed.
    cache_max_bytes: int = Field(default=defaults.CACHE_MAX_BYTES, ge=1)
    #: Bytes (uncompressed) and files one cache entry may hold.
    cache_entry_max_bytes: int = Field(default=defaults.CACHE_ENTRY_MAX_BYTES, ge=1)
    cache_entry_max_files: int = Field(default=defaults.CACHE_ENTRY_MAX_FILES, ge=1)
    #: The branch whose caches every branch may restore, when the event does not name the
    #: repository's default branch.
    cache_default_branch: str = defaults.CACHE_DEFAULT_BRANCH
    #: ``zstd`` or ``gzip`` archives for new cache entries (both are read).
    cache_compression: str = Field(default="zstd", pattern="^(zstd|gzip)$")

    # Retention: --sync payloads and artifacts.
    #: Seconds an uploaded ``--sync`` payload that no job names is kept before the periodic
    #: sweep (``ci-pool beat``) removes it.
    sync_payload_max_age: float = Field(default=defaults.SYNC_PAYLOAD_MAX_AGE, gt=0)
    #: Days an artifact of upload-artifact is kept when its ``retention-days`` is unset,
    #: and the most days one may ask for (a larger ``retention-days`` is cut to it).
    artifact_retention_days: int = Field(default=defaults.ARTIFACT_RETENTION_DAYS, ge=1)
    artifact_retention_max_days: int = Field(default=defaults.ARTIFACT_RETENTION_MAX_DAYS, ge=1)

    def artifact_days(self, asked: int | None) -> int:
        """Days an artifact is kept: ``asked`` (``retention-days``; 0 or None: the pool's
        default), at most ``artifact_retention_max_days``."""
        days = asked or self.artifact_retention_days
        return min(days, self.artifact_retention_max_days)

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.home / "cache").resolve()

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, value: str) -> str:
        if value and (not value.startswith("s3://") or not value[5:].split("/", 1)[0]):
            raise ValueError("must be s3://bucket or s3://bucket/prefix (empty: cache_dir)")
        return value

    @field_validator("cache_s3_endpoint")
    @classmethod
    def _cache_endpoint(cls, value: str) -> str:
        if not value:
            return value
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL of the S3-compatible server")
        host, _ = split_host_port(value.split("://", 1)[1].split("/", 1)[0])
        why = refusal(host.strip("[]"), allow_loopback=True) if is_ip(host.strip("[]")) else None
        if why:
            raise ValueError(f"is refused: {why}")
        return value


class ActionSettings(HomeSettings):
    """Actions (README "Actions"): where ``uses:`` is fetched from, and the runner's bounded
    caches of fetched actions and of the images built for docker actions."""

    #: The forge that mirrors public actions: ``uses: owner/repo@ref`` is fetched from
    #: ``<actions_url>/owner/repo`` (an https://, http://, git:// base; file:// only with
    #: ``allow_local_repos``). Its host must pass ``git_hosts`` like any repository's.
    actions_url: str | None = None
    #: The per-runner cache of fetched actions, one directory per commit (default
    #: ``home/actions``).
    actions_cache: Path | None = None
    #: Bytes one fetched action may take; a larger one is refused.
    action_max_bytes: int = Field(default=defaults.ACTION_MAX_BYTES, ge=1024)
    #: Bounds of a runner's cache of fetched actions: bytes and commits kept; past either,
    #: the least recently used are evicted (never one a running job uses).
    actions_cache_max_bytes: int = Field(default=defaults.ACTIONS_CACHE_MAX_BYTES, ge=1)
    actions_cache_max_count: int = Field(default=defaults.ACTIONS_CACHE_MAX_COUNT, ge=1)
    #: Bounds of the images a runner built for docker actions: bytes and images kept.
    action_images_max_bytes: int = Field(default=defaults.ACTION_IMAGES_MAX_BYTES, ge=1)
    action_images_max_count: int = Field(default=defaults.ACTION_IMAGES_MAX_COUNT, ge=1)

    @field_validator("actions_url")
    @classmethod
    def _actions_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^(https?|git|ssh|file)://[^\s]+$", value):
            raise ValueError(
                f"{value!r} is not a base URL: give https://host[/path] (or http://, git://, "
                "ssh://; file:// with allow_local_repos)"
            )
        return value.rstrip("/")

    @property
    def resolved_actions_cache(self) -> Path:
        return (self.actions_cache or self.home / defaults.ACTIONS_CACHE_DIR).resolve()


class RunnerSettings(HomeSettings):
    """A runner: its name and identity, its container engine, ``runner exec``."""

    #: Overrides the runner id (default: the Celery worker's node name).
    runner_id: str = ""

    # Runner identity. A runner joins with a one-time ``registration_token`` (exchanged
    # at its first start through ``api_url``) and from then on presents its own credential:
    # ``runner_credential`` or, if unset, the file ``runner_credential_file`` (0600). Its
    # registered, pool-wide unique name is ``runner_id``.
    registration_token: SecretStr | None = None
    runner_credential: SecretStr | None = None
    #: Where the runner keeps its credential; empty: ``<home>/runner-credential``.
    runner_credential_file: Path | None = None

    # Runner names and targeting. A worker's name is ``runner_id`` if set, else what
    # ``runner_name_pattern`` renders (default ``{host}-{capability}-{n}``) with
    # ``runner_name_values`` (``{client}``, ``{env}``...) and the lowest free ``{n}``.
    runner_name_pattern: str = Field(default=defaults.RUNNER_NAME_PATTERN, max_length=200)
    runner_name_values: dict[str, str] = Field(default_factory=dict, max_length=32)
    #: ``runs-on: {group: NAME}`` sends a job to runners whose names match this glob.
    runner_groups: dict[str, str] = Field(default_factory=dict, max_length=256)

    # -- runner exec (``ci-pool runner exec NAME -- cmd``) --
    #: Allow diagnostic commands on strict lanes (privileged, host mode, signed-only or
    #: allowlisted capabilities such as iso and deploy); off: refused there. A worker checks
    #: its own copy of this setting too.
    runner_exec_strict: bool = False
    #: Seconds a diagnostic command may run when the caller gives no timeout.
    runner_exec_timeout: float = Field(
        default=defaults.RUNNER_EXEC_TIMEOUT, gt=0, le=defaults.RUNNER_EXEC_MAX_TIMEOUT
    )
    #: Bytes of a diagnostic command's output that come back (the rest is cut, and says so).
    runner_exec_max_output: int = Field(default=defaults.RUNNER_EXEC_MAX_OUTPUT, ge=1024)

    # Container engine (README "Podman or Docker"). ``auto`` takes the first engine that
    # answers: Docker (``DOCKER_HOST``, else /var/run/docker.sock), then Podman's service.
    container_runtime: Literal["auto", "docker", "podman"] = "auto"
    #: The socket of Podman's Docker-compatible service (``podman system service``).
    podman_host: str = defaults.PODMAN_HOST

    @field_validator("runner_groups")
    @classmethod
    def _runner_groups(cls, value: dict[str, str]) -> dict[str, str]:
        from ci_pool.core.runner_names import check_runner_glob

        return {k: check_runner_glob(v, f"runner_groups.{k}") for k, v in value.items()}

    @field_validator("runner_name_pattern")
    @classmethod
    def _runner_name_pattern(cls, value: str) -> str:
        from ci_pool.core.runner_names import pattern_fields

        if not pattern_fields(value):
            raise ValueError(f"runner_name_pattern {value!r} has no {{field}}; add {{n}}")
        return value

    @property
    def resolved_runner_credential_file(self) -> Path:
        return (self.runner_credential_file or self.home / "runner-credential").resolve()

    def runner_credential_value(self) -> str | None:
        """The runner's credential: the setting, else the credential file's content."""
        if self.runner_credential is not None:
            return self.runner_credential.get_secret_value()
        try:
            return self.resolved_runner_credential_file.read_text().strip() or None
        except OSError:
            return None
