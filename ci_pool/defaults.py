"""Constants in one place: Redis key prefixes, TTLs, default timeouts, label names."""

from __future__ import annotations

#: Every Redis key ci-pool writes starts with this prefix.
KEY_PREFIX = "ci-pool:"
#: Live log of one job: a Redis stream, one entry per line.
LOG_STREAM_KEY = KEY_PREFIX + "log:{job_id}"
#: Entries kept per live log stream; the store keeps the whole log.
LOG_STREAM_MAXLEN = 100_000
#: How long a finished job's live stream stays in Redis (seconds).
LOG_STREAM_TTL = 3600
#: A runner's registration hash; expires unless the runner heartbeats.
RUNNER_KEY = KEY_PREFIX + "runner:{runner_id}"
#: A signature already accepted (kept past its validity, so it is accepted once).
SIGNATURE_SEEN_KEY = KEY_PREFIX + "signature:{mac}"
#: Set of every runner id that registered (entries expire lazily on read).
RUNNERS_SET_KEY = KEY_PREFIX + "runners"
#: Last registration of every runner that has not exited cleanly (to show lost ones).
RUNNERS_SEEN_KEY = KEY_PREFIX + "runners:seen"

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

#: Home directory for the embedded store, workspaces and demo files.
HOME_DIR = ".ci-pool"
CONFIG_FILE = "ci-pool.toml"

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

# Checkout steps (``uses: actions/checkout``).
#: Patterns one checkout's ``sparse-checkout`` may list.
MAX_SPARSE_PATTERNS = 200
#: The file (in the job's read-only scripts directory) a persisted checkout credential
#: helper reads; ``{n}`` is the step's index.
CREDENTIAL_FILE = "git-credential-{n}"
