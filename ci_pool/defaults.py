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

#: Home directory for the embedded store, workspaces and demo files.
HOME_DIR = ".ci-pool"
CONFIG_FILE = "ci-pool.toml"

#: The CLI in remote mode (``CI_POOL_API_URL``): seconds to connect, to get an answer, and
#: between polls of a job it waits for.
API_CONNECT_TIMEOUT = 10.0
API_TIMEOUT = 60.0
API_POLL_INTERVAL = 0.25
