"""Constants in one place: Redis key prefixes, TTLs, default timeouts, label names."""

from __future__ import annotations

#: Every Redis key ci-pool writes starts with this prefix.
KEY_PREFIX = "ci-pool:"
#: Live log of one job: a Redis stream, one entry per line. The capability is in the key
#: so a runner's Redis user can be limited to the streams of its capabilities' jobs.
LOG_STREAM_KEY = KEY_PREFIX + "log:{capability}:{job_id}"
#: Entries kept per live log stream; the store keeps the whole log.
LOG_STREAM_MAXLEN = 100_000
#: How long a finished job's live stream stays in Redis (seconds).
LOG_STREAM_TTL = 3600
#: A runner's registration hash; expires unless the runner heartbeats.
RUNNER_KEY = KEY_PREFIX + "runner:{runner_id}"
#: A signature already accepted (kept past its validity, so it is accepted once).
SIGNATURE_SEEN_KEY = KEY_PREFIX + "signature:{mac}"
#: Last registration of a runner that has not exited cleanly (to show lost ones): one key
#: per runner (never a shared set or hash), so each runner writes only its own keys.
RUNNER_SEEN_KEY = KEY_PREFIX + "seen:{runner_id}"
#: Tells a runner to drain (set by ``ci-pool drain``).
DRAIN_KEY = KEY_PREFIX + "drain:{runner_id}"
#: kombu's unacknowledged-message hash, its index and its mutex, one set per queue (kombu
#: keeps one for the whole broker by default), so a runner reaches only its own queues'.
UNACKED_KEY = KEY_PREFIX + "unacked:{queue}"
UNACKED_INDEX_KEY = KEY_PREFIX + "unacked_index:{queue}"
UNACKED_MUTEX_KEY = KEY_PREFIX + "unacked_mutex:{queue}"

#: Container labels.
LABEL_JOB = "ci-pool.job"
LABEL_RUNNER = "ci-pool.runner"
LABEL_ATTEMPT = "ci-pool.attempt"

#: Celery task name of the one task a job becomes.
RUN_JOB_TASK = "ci_pool.run_job"

#: Job defaults (seconds).
DEFAULT_JOB_TIMEOUT = 3600
MAX_JOB_TIMEOUT = 6 * 3600
#: Broker redelivery of an unacknowledged message; above the longest job.
VISIBILITY_TIMEOUT = MAX_JOB_TIMEOUT + 600
LEASE_TTL = 30.0
HEARTBEAT_INTERVAL = 5.0
RUNNER_TTL = 30.0
MAX_ATTEMPTS = 3
#: Backoff before an infra-error retry: base * 2**(attempt-1), capped.
RETRY_BACKOFF = 2.0
RETRY_BACKOFF_MAX = 60.0
#: Grace between SIGTERM and SIGKILL when a container or process is stopped.
STOP_GRACE = 10.0
#: Git operations (ls-remote at submit, fetch at checkout).
GIT_TIMEOUT = 600.0
LS_REMOTE_TIMEOUT = 10.0
#: Ref look-ups (``git ls-remote``) one API process runs at once, and how long a submit
#: waits for a free slot before it is answered 503 "busy, retry".
REF_LOOKUP_CONCURRENCY = 8
REF_LOOKUP_WAIT = 2.0
#: Git servers the pool may contact when the operator names none ("*": any host name;
#: link-local and cloud metadata addresses are refused whatever the list says).
GIT_HOSTS = ("*",)
#: How often buffered log lines are written to the store (seconds / bytes).
LOG_FLUSH_INTERVAL = 1.0
LOG_FLUSH_BYTES = 64 * 1024
#: Log size kept per attempt; past it the middle is dropped behind a visible marker.
LOG_MAX_BYTES = 16 * 1024 * 1024
#: A line longer than this without a newline is cut (progress bars, binary output).
LOG_MAX_LINE = 64 * 1024
#: Characters of output kept as the evidence sample.
STDOUT_SAMPLE = 2000

#: Where the workspace is mounted inside a job container, and the step scripts.
CONTAINER_WORKSPACE = "/workspace"
CONTAINER_SCRIPTS = "/ci-pool"
#: Where a job container sees the files its steps write back ($GITHUB_OUTPUT).
CONTAINER_FILES = "/ci-pool-files"

#: $GITHUB_OUTPUT read back per step (bytes), as in GitHub Actions; past it the step fails.
STEP_OUTPUT_MAX_BYTES = 1024 * 1024
#: Artifacts collected per job attempt (bytes), unless ``artifact_max_bytes`` says otherwise.
ARTIFACT_MAX_BYTES = 1024**3

#: The per-directory home of older versions: an existing one is pointed at, never used
#: silently (see ci_pool/home.py for where the home is now).
HOME_DIR = ".ci-pool"
CONFIG_FILE = "ci-pool.toml"
# -- the home and `ci-pool up` --
#: Name of the home under $XDG_DATA_HOME (or ~/.local/share).
HOME_NAME = "ci-pool"
#: The home of a system pool (systemd ``StateDirectory=ci-pool``).
SYSTEM_HOME = "/var/lib/ci-pool"
#: The SQLite store inside the home.
STORE_FILE = "ci-pool.db"
#: Where a running ``ci-pool up`` records its broker and API (0600), and its admin token.
UP_RECORD = "up.json"
UP_TOKEN = "up-token"
#: Seconds ``ci-pool up`` waits for its children to start, and between panel refreshes.
UP_START_TIMEOUT = 60.0
UP_REFRESH = 1.0

#: The CLI in remote mode (``CI_POOL_API_URL``): seconds to connect, to get an answer, and
#: between polls of a job it waits for.
API_CONNECT_TIMEOUT = 10.0
API_TIMEOUT = 60.0
API_POLL_INTERVAL = 0.25

#: Longest glob accepted (branch/tag/path filters, allowlists, token repo limits).
GLOB_MAX_LENGTH = 512
#: Automaton states a compiled glob caches transitions for; past this, matching goes on
#: without caching, still linear in the text.
GLOB_CACHED_TRANSITIONS = 512
#: Webhook content keys are kept (and a replay refused) this long by default (seconds).
WEBHOOK_REPLAY_WINDOW = 7 * 24 * 3600
#: Bounds of outside input (README "Security model"): each error names the one it hit.
#: Request bodies of the API (bytes); a workflow posted whole may be a little larger.
MAX_BODY_BYTES = 1024 * 1024
MAX_PIPELINE_BODY_BYTES = 2 * 1024 * 1024
#: Nesting of JSON objects and arrays in a request body.
MAX_JSON_DEPTH = 64
#: A workflow file: its size, YAML nodes built counting each alias as a copy of what it
#: names (an alias bomb hits this), and nesting of mappings and sequences.
MAX_WORKFLOW_BYTES = 1024 * 1024
MAX_YAML_NODES = 20_000
MAX_YAML_DEPTH = 64
#: Nesting of parentheses, ``!`` and function calls in one ``${{ }}`` expression.
MAX_EXPRESSION_DEPTH = 32
#: Cells of one job's matrix (GitHub's limit), and jobs of one pipeline, matrix cells included.
MAX_MATRIX_CELLS = 256
#: Entries of one matrix's include or exclude list.
MAX_MATRIX_ENTRIES = 256
MAX_JOBS_PER_PIPELINE = 500
#: One job spec: steps, bytes of one ``run:`` script, labels, env entries and bytes of one
#: value, artifact patterns, secret names, and the whole spec as JSON.
MAX_STEPS = 100
MAX_SCRIPT_BYTES = 128 * 1024
MAX_LABELS = 32
MAX_ENV_ENTRIES = 200
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ARTIFACT_PATTERNS = 50
MAX_SECRETS = 50
MAX_JOB_SPEC_BYTES = 512 * 1024
#: All jobs of one pipeline (matrix cells and aliases repeat what the file holds once).
MAX_PIPELINE_BYTES = 8 * 1024 * 1024

# -- workflow contexts (github, runner, vars, inputs, secrets) and their bounds -----------
#: ``fromJSON()``'s text, in bytes (its nesting is bounded by MAX_JSON_DEPTH).
MAX_FROM_JSON_BYTES = 256 * 1024
#: ``[vars]`` in ci-pool.toml: entries, and bytes of one value.
MAX_VARS = 500
MAX_VAR_VALUE_BYTES = 48 * 1024
#: ``workflow_dispatch`` inputs given to one run: entries, and bytes of one value.
MAX_INPUTS = 25
MAX_INPUT_VALUE_BYTES = 64 * 1024
#: ``github.event``: the payload a pipeline keeps for its jobs, as JSON bytes.
MAX_EVENT_BYTES = 1024 * 1024
#: ``hashFiles()``: files hashed per call, and directories walked, before it fails.
HASH_FILES_MAX_FILES = 100_000
HASH_FILES_MAX_DIRS = 50_000
#: The forge token capability secret behind ``github.token`` and ``secrets.GITHUB_TOKEN``.
FORGE_TOKEN_SECRET = "GITHUB_TOKEN"
#: What the runner reports as ``runner.os`` / ``RUNNER_OS``.
RUNNER_OS = "Linux"
#: Commit statuses: posts of one status before it is given up (over about 7 minutes with
#: the default backoff: 30, 60, 120, 240 s), and the seconds a forge has to answer a post.
STATUS_ATTEMPTS = 5
STATUS_BACKOFF = 30.0
STATUS_TIMEOUT = 10.0
#: A status being sent is held this long, so two senders never post one job's at once.
STATUS_LEASE = 60.0
#: Rows one beat sweep sends.
STATUS_SWEEP_BATCH = 100
#: Characters of a concurrency group's name, as evaluated at submit.
MAX_CONCURRENCY_GROUP = 400
#: Tries of a concurrency group claim that lost a race with another writer of the group.
CONCURRENCY_CLAIM_TRIES = 8
#: Files and workflow commands of a job's steps ($GITHUB_ENV, $GITHUB_PATH,
#: $GITHUB_STEP_SUMMARY, ::add-mask::, ::error::...), bounded as in GitHub Actions.
#: $GITHUB_ENV and $GITHUB_PATH read back per step (bytes); past it the step fails.
STEP_ENV_MAX_BYTES = 1024 * 1024
#: Markdown kept per step summary (bytes); past it the summary is cut, with a notice.
STEP_SUMMARY_MAX_BYTES = 1024 * 1024
#: Step summaries kept per job attempt; later ones are dropped, with a notice.
MAX_STEP_SUMMARIES = 20
#: Annotations kept per kind (error, warning, notice) per step, and per job attempt.
ANNOTATIONS_PER_STEP = 10
ANNOTATIONS_PER_JOB = 50
#: Characters kept of an annotation's message, and of its title and file.
ANNOTATION_MAX_CHARS = 4096
ANNOTATION_FIELD_MAX_CHARS = 1024
#: Values one job may add with ``::add-mask::`` (each makes every later line cost more).
MAX_ADDED_MASKS = 500
#: Names a step cannot set through $GITHUB_ENV: the runner's own facts and files, and
#: NODE_OPTIONS (refused by Actions too). Matched case-insensitively; ``*`` ends a prefix.
RESERVED_ENV_NAMES = (
    "CI_POOL_*",
    "GITHUB_ENV",
    "GITHUB_PATH",
    "GITHUB_OUTPUT",
    "GITHUB_STATE",
    "GITHUB_STEP_SUMMARY",
    "NODE_OPTIONS",
)
#: Triggers: how old a schedule slot ``beat`` still starts (seconds), and how many
#: repositories may be registered for schedules.
SCHEDULE_CATCHUP = 300.0
MAX_REPOSITORIES = 500
# Checkout steps (``uses: actions/checkout``).
#: Patterns one checkout's ``sparse-checkout`` may list.
MAX_SPARSE_PATTERNS = 200
#: The file (in the job's read-only scripts directory) a persisted checkout credential
#: helper reads; ``{n}`` is the step's index.
CREDENTIAL_FILE = "git-credential-{n}"
# -- doctor and images --
#: Free space under the workspace, mirror and artifact roots: warn below, fail below.
DOCTOR_DISK_WARN_BYTES = 5 * 1024**3
DOCTOR_DISK_FAIL_BYTES = 1 * 1024**3
#: Seconds of clock difference with the broker's ``TIME`` above which doctor warns.
DOCTOR_CLOCK_SKEW_WARN = 2.0
#: Oldest git the runners and submitters may use (partial clone, protocol v2 by default).
GIT_MIN_VERSION = (2, 30)
#: Nested Docker slower than host mode by more than this ratio: advise ``mode = "host"``.
DOCTOR_OVERHEAD_WARN = 1.30
#: Runs of the overhead workload in each mode (the median of each is compared).
DOCTOR_BENCH_RUNS = 3
#: The busybox image the overhead workload runs in (built here, nothing is pulled).
DOCTOR_BENCH_IMAGE = "ci-pool/doctor-bench:latest"
#: Label on images ``ci-pool images build`` makes: what each was built from.
LABEL_IMAGE_SOURCE = "ci-pool.image.source"
#: Label on the short-lived container of doctor's overhead workload.
LABEL_DOCTOR = "ci-pool.doctor"
# -- built-in artifact and cache actions --
#: Files one ``actions/upload-artifact`` step may store (``artifact_max_files``).
ARTIFACT_MAX_FILES = 10_000
#: Longest artifact name and cache key (GitHub's own limits).
ARTIFACT_NAME_MAX = 255
CACHE_KEY_MAX = 512
#: Restore keys one ``actions/cache`` step may list.
CACHE_MAX_RESTORE_KEYS = 10
#: Paths one ``actions/cache`` step may list.
CACHE_MAX_PATHS = 50
#: The pool cache: total bytes, and one entry's uncompressed bytes and files.
CACHE_MAX_BYTES = 10 * 1024**3
CACHE_ENTRY_MAX_BYTES = 2 * 1024**3
CACHE_ENTRY_MAX_FILES = 100_000
CACHE_DEFAULT_BRANCH = "main"
CACHE_S3_REGION = "us-east-1"
#: Layout version of the cache's object names (bumped when it changes).
CACHE_LAYOUT = "v1"

# -- actions fetched from a forge (``uses: owner/repo@ref``) --
#: Bytes one fetched action may take (its git objects, then its files); past it the
#: fetch is refused and the step fails.
ACTION_MAX_BYTES = 200 * 1024**2
#: Seconds one action fetch may take.
ACTION_FETCH_TIMEOUT = 120.0
#: The directory of the per-runner action cache under ``home``.
ACTIONS_CACHE_DIR = "actions"
#: Where a fetched action's files are copied in the job's read-only scripts directory.
ACTIONS_IN_SCRIPTS = "actions"


#: Where a job container sees its capability's ``node_runtime`` (read-only).
CONTAINER_NODE = "/ci-pool-node"
#: Files of an action's ``post`` script: ``<stem>-<base + step>`` apart from any step's.
POST_FILES_BASE = 100_000
#: Bytes of a container action's directory copied as its build context, at most.
ACTION_CONTEXT_MAX_BYTES = 256 * 1024 * 1024
#: Files of a container action's directory, at most.
ACTION_CONTEXT_MAX_FILES = 20_000
#: Label on the images built from container actions' Dockerfiles (value: the action).
LABEL_ACTION_IMAGE = "ci-pool.action-image"
#: Repository of the images built from container actions (tagged by content hash).
ACTION_IMAGE_REPOSITORY = "ci-pool-action"

# -- services (``services:``) and job container settings (``container:``) --
#: Health-check defaults of a service when its options give only ``--health-cmd``.
SERVICE_HEALTH_INTERVAL = 10.0
SERVICE_HEALTH_TIMEOUT = 5.0
SERVICE_HEALTH_RETRIES = 3
#: The longest a job waits for its services to be running and healthy, in seconds.
SERVICE_START_TIMEOUT = 300.0
#: Lines of a failed service's log shown in the job's reason.
SERVICE_LOG_TAIL = 20
#: Characters of one ``options:`` string.
MAX_CONTAINER_OPTIONS = 2000
#: Services of one job.
MAX_SERVICES = 10
#: Network option that leaves the host without an address on a job's service network:
#: the containers on it then have no gateway, whatever the host's forwarding rules.
NETWORK_NO_HOST_ADDRESS = "com.docker.network.bridge.inhibit_ipv4"
#: Label on a service container: the service's name (beside the job's labels).
LABEL_SERVICE = "ci-pool.service"
#: Network option naming the Linux bridge of a host job's service network.
NETWORK_BRIDGE_NAME = "com.docker.network.bridge.name"


# -- workspaces over cached trees and the bench workload ----------------------------------
#: An attempt's directory for the upper and work layers of its overlay workspaces.
OVERLAY_LAYERS_DIR = "layers"
#: Cached trees under this many bytes are copied rather than overlaid (see settings). 0: an
#: overlay always, since the unmount runs off the job's path and costs a few ms of CPU where
#: a copy of even a small checkout (its .git is some 40 files) costs 25 ms.
TREE_OVERLAY_MIN_BYTES = 0
#: Seconds one run of the build-like workload (service/workload.py) may take.
WORKLOAD_TIMEOUT = 600.0
#: Doctor's build-like workload, in small: C files and Python test modules.
DOCTOR_WORKLOAD_C_FILES = 8
DOCTOR_WORKLOAD_TESTS = 1

# -- testing uncommitted work (submit/run --sync) --
#: Bytes of one sync payload (patch or gzipped snapshot) by default.
SYNC_MAX_BYTES = 8 * 1024 * 1024
#: A snapshot unpacks to at most this many times ``sync_max_bytes``, in at most
#: SYNC_MAX_ENTRIES files, directories and symlinks.
SYNC_UNPACK_FACTOR = 8
SYNC_MAX_ENTRIES = 50_000
#: Seconds the submitting side gives git to list the server's refs and build the payload.
SYNC_GIT_TIMEOUT = 60.0

# -- cleanup and warm containers --
#: Seconds a worker process waits at exit for the removals it still has queued (the
#: runner's sweep removes what is left).
CLEANUP_DRAIN_TIMEOUT = 30.0
#: Label of a warm container (value: its capability); it keeps it after a job takes it.
LABEL_WARM = "ci-pool.warm"
#: Label of a warm container: its slot directory on the runner (the sweep of another
#: runner of the same pool removes an orphan's slot with it).
LABEL_WARM_SLOT = "ci-pool.warm.slot"
#: Name of an idle warm container; a job that takes it renames it to ``ci-pool-<job>-<n>``.
WARM_NAME = "ci-pool-warm-{capability}-{token}"
#: Directory under the workspace root holding the warm containers' slot directories.
WARM_DIR = ".warm"
#: File in a slot directory (outside every mount) naming the slot's container.
WARM_ID_FILE = "container-id"
#: Seconds between a runner's checks that its warm containers are all there.
WARM_CHECK_INTERVAL = 0.2
#: Seconds a runner waits after failing to make a warm container before it tries again.
WARM_RETRY_DELAY = 5.0

# -- runner exec (one diagnostic command on a named runner, through the pool) --
#: The Celery remote-control command a worker answers ``ci-pool runner exec`` with.
RUNNER_EXEC_COMMAND = "ci_pool_runner_exec"
#: Seconds a diagnostic command may run by default, and at most.
RUNNER_EXEC_TIMEOUT = 30.0
RUNNER_EXEC_MAX_TIMEOUT = 300.0
#: Bytes of output (stdout and stderr together) returned; past it the output is cut.
RUNNER_EXEC_MAX_OUTPUT = 64 * 1024
#: Bounds of the command line: arguments, and bytes of one argument.
RUNNER_EXEC_MAX_ARGS = 64
RUNNER_EXEC_MAX_ARG_BYTES = 4096
#: Seconds the pool waits for the runner's answer beyond the command's own timeout.
RUNNER_EXEC_REPLY_GRACE = 10.0
#: The command's whole environment (nothing of the worker's is passed through).
RUNNER_EXEC_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# -- the web view (/ui/) --
#: A browser session: the token digest it stands for, its CSRF value; ends at logout.
UI_SESSION_KEY = KEY_PREFIX + "ui:session:{sid}"
#: Seconds a web view session lasts without a request.
UI_SESSION_TTL = 12 * 3600
#: Name of the session cookie, and of the login form's CSRF cookie.
UI_SESSION_COOKIE = "ci_pool_session"
UI_LOGIN_COOKIE = "ci_pool_login"
#: A job page renders this many log lines (at most UI_LOG_PAGE_BYTES) server-side, a few
#: screens; the rest comes a page of the same size at a time, or live over the stream.
UI_LOG_PAGE_LINES = 500
UI_LOG_PAGE_BYTES = 256 * 1024
#: Rows of the pipelines list per page, and a runner's recent jobs shown.
UI_PAGE_ROWS = 50
UI_RUNNER_JOBS = 20
#: Seconds between refreshes of the pool page's live fragment.
UI_POOL_REFRESH_S = 5

# -- container engines (Docker or Podman) --
#: Docker's socket when DOCKER_HOST is unset.
DOCKER_HOST = "unix:///var/run/docker.sock"
#: Rootful Podman's Docker-compatible socket (``podman system service``).
PODMAN_HOST = "unix:///run/podman/podman.sock"
#: Seconds ``auto`` waits for each engine's ping.
ENGINE_PROBE_TIMEOUT = 5.0

# -- remainders: quick CLI, sync payload sweep, artifact retention, action cache bounds --
#: Keys of a job's view that only the detailed view (``show``) carries.
JOB_DETAIL_KEYS: tuple[str, ...] = ("waiting", "artifacts", "expired_artifacts", "events")
JOB_DETAIL_KEYS += ("annotations", "summaries")
#: Settings that point the CLI at another pool than the home's ``ci-pool up``: when one is
#: set, ``show``/``status``/``submit`` do not take the quick way to up's API.
ELSEWHERE_KEYS = ("api_url", "api_token", "store_url", "broker_url", "sign_key", "sign_key_id")
#: Seconds an uploaded sync payload that no job names is kept (setting sync_payload_max_age).
SYNC_PAYLOAD_MAX_AGE = 3600.0
#: Days an artifact is kept without ``retention-days``, and the most one may ask for.
ARTIFACT_RETENTION_DAYS = 90
ARTIFACT_RETENTION_MAX_DAYS = 90
#: Bounds of a runner's action cache and of its images built for docker actions.
ACTIONS_CACHE_MAX_BYTES = 2 * 1024**3
ACTIONS_CACHE_MAX_COUNT = 200
ACTION_IMAGES_MAX_BYTES = 10 * 1024**3
ACTION_IMAGES_MAX_COUNT = 50
#: Directory under the workspace root where a runner stamps each action image it uses.
ACTION_IMAGE_STAMPS = ".action-images"

# -- runners that reach the store through the API (``/v1/runner``) --
#: Route prefix of the runner's own API (authenticated by its credential only).
RUNNER_API_PREFIX = "/v1/runner"
#: Seconds a runner waits for one answer of the API before it counts the call failed.
RUNNER_API_TIMEOUT = 30.0
#: Bytes of one log chunk a runner sends (the log writer flushes far smaller ones).
RUNNER_LOG_CHUNK_MAX = 512 * 1024
#: Bytes of a job's outputs (JSON) and of one step summary a runner may store.
RUNNER_OUTPUTS_MAX = 1024 * 1024
RUNNER_SUMMARY_MAX = 2 * 1024 * 1024
#: Annotations in one call, and characters of an outcome's reason.
RUNNER_ANNOTATIONS_MAX = 500
RUNNER_REASON_MAX = 4096
#: Bytes of a JSON body to a runner route (the upload routes stream their own bound).
RUNNER_BODY_MAX = 4 * 1024 * 1024

# -- runner identity --
#: Exit status of a worker whose Redis user was refused (revoked): sysexits' EX_NOPERM, so
#: a service manager can be told not to restart it (systemd RestartPreventExitStatus=77).
EXIT_REVOKED = 77

# -- runner names and targeting --
#: A runner's name unless ``runner_name_pattern`` says otherwise.
RUNNER_NAME_PATTERN = "{host}-{capability}-{n}"
#: Runner names a worker tries (``{n}`` = 1, 2, ...) before it gives up.
RUNNER_NAME_MAX_INDEX = 999
#: Longest runner glob a job may carry (``--runner``, ``runner:``, runner groups).
RUNNER_GLOB_MAX_LENGTH = 128
#: Who holds a runner name right now ("<host>|<pid>"), refreshed with each heartbeat.
RUNNER_NAME_KEY = KEY_PREFIX + "runner-name:{runner_id}"
#: A runner's own queue (besides its capability's): targeted jobs are sent there.
RUNNER_QUEUE = "{queue}.{runner_id}"

# -- provisioning with runner identities --
#: Shortest life of the registration token provisioning ships to a new runner (it is used
#: at the worker's first start, right after the push; apply's heartbeat wait adds to it).
PROVISION_REGISTRATION_TTL = 900.0
#: Where a provisioned worker keeps its state, and so its credential files (its unit's
#: StateDirectory; ``runner_credential_file`` is ``<home>/runner-credential``).
PROVISION_RUNNER_HOME = "/var/lib/ci-pool"

# -- worker lifecycle --
#: Seconds a revoked runner gives Celery's cold shutdown to end the process before it
#: exits at once (its jobs' containers and pool processes are gone by then).
REVOKED_EXIT_GRACE = 10.0

# -- the runner's own cost per job --
#: ci-pool's own log lines are held at most this long (seconds), so lines the runner writes
#: back to back reach the live stream in one round trip; a step's output is never held.
LOG_LIVE_HOLD = 0.005

# -- filling the tree cache off the job's path --
#: Suffix of the directory a background fill writes a cached tree into before renaming it
#: into place (and, with ".lock", of the lock its one filler holds).
TREE_FILL_SUFFIX = ".fill"

# -- the embedded store's writers --
#: The file beside a SQLite database whose POSIX lock queues the store's writers (so a
#: waiting writer is woken when the lock frees instead of polling in SQLite's busy handler).
SQLITE_WRITER_LOCK_SUFFIX = "-writer.lock"
#: How long a writer waits for that lock (seconds; SQLite's busy timeout) before it goes on
#: to SQLite's own lock, so a writer hung inside its transaction never blocks the rest forever.
SQLITE_WRITER_LOCK_WAIT = 30.0

# Job scratch (worker/scratch.py): the small per-job files of host jobs on a tmpfs.
#: The directory under the workspace root holding each runner process's scratch mount.
SCRATCH_DIR = ".scratch"
#: Size of a runner process's scratch tmpfs: its job's step scripts, event file and step
#: files (each read back capped at 1 MiB); a step writing past it fails with ENOSPC.
JOB_SCRATCH_BYTES = 32 * 1024 * 1024
