"""Every Redis key and channel ci-pool and Celery use, in one place, and the Redis ACL
rules of a registered runner built from them.

The names are chosen so that a runner's reach can be written as ACL key patterns: what a
runner writes carries its name (registration, last-seen, drain) or its capability (queue,
unacknowledged messages, live log streams). Pure functions: nothing here talks to Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from ci_pool import defaults

#: kombu's Redis transport keeps priorities 3, 6 and 9 in keys "<queue>\x06\x16<p>".
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
#: The direct exchange every capability queue is bound to (see broker/app.py).
EXCHANGE = "ci-pool"
#: Celery's control (pidbox) and event exchanges, as kombu names them.
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"
EVENT_EXCHANGE = "celeryev"
#: A registered runner's Redis ACL user is this prefix and its name.
ACL_USER_PREFIX = "runner-"


def log_stream_key(capability: str, job_id: str) -> str:
    return defaults.LOG_STREAM_KEY.format(capability=capability, job_id=job_id)


def runner_key(runner_id: str) -> str:
    return defaults.RUNNER_KEY.format(runner_id=runner_id)


def seen_key(runner_id: str) -> str:
    return defaults.RUNNER_SEEN_KEY.format(runner_id=runner_id)


def name_key(runner_id: str) -> str:
    """The Redis key naming the process that holds a runner name ("<host>|<pid>")."""
    return defaults.RUNNER_NAME_KEY.format(runner_id=runner_id)


def runner_queue(queue: str, runner_id: str) -> str:
    """A runner's own queue: jobs sent to it by name wait there."""
    return defaults.RUNNER_QUEUE.format(queue=queue, runner_id=runner_id)


def drain_key(runner_id: str) -> str:
    """The Redis key that tells a runner to drain (set by ``ci-pool drain``)."""
    return defaults.DRAIN_KEY.format(runner_id=runner_id)


#: SCAN patterns over every runner's registration and last-seen keys.
RUNNER_KEYS_MATCH = defaults.RUNNER_KEY.format(runner_id="*")
SEEN_KEYS_MATCH = defaults.RUNNER_SEEN_KEY.format(runner_id="*")


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, one per priority step."""
    return [queue + suffix for suffix in PRIORITY_SUFFIXES]


def unacked_keys(queue: str) -> tuple[str, str, str]:
    """(hash, index, mutex) of the messages of ``queue`` delivered but not acknowledged."""
    return (
        defaults.UNACKED_KEY.format(queue=queue),
        defaults.UNACKED_INDEX_KEY.format(queue=queue),
        defaults.UNACKED_MUTEX_KEY.format(queue=queue),
    )


def unacked_options(queue: str) -> dict[str, str]:
    """kombu transport options that give a worker of ``queue`` its own unacked keys."""
    key, index, mutex = unacked_keys(queue)
    return {"unacked_key": key, "unacked_index_key": index, "unacked_mutex_key": mutex}


def acl_user(runner_name: str) -> str:
    return ACL_USER_PREFIX + runner_name


def worker_node(capability: str, runner_name: str) -> str:
    """The Celery node name of a registered runner's worker (its pidbox queue's name)."""
    return f"{capability}@{runner_name}"


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern (ACL key and channel patterns)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class RunnerReach:
    """What one runner may touch in Redis: its name, and its capabilities with their queues."""

    name: str
    #: capability name -> queue name
    queues: dict[str, str]
    #: The Redis database number in the broker URL (kombu prefixes fanout channels with it).
    db: int = 0
    #: (capability, job id) of every job it holds the claim of: their live log streams.
    claims: tuple[tuple[str, str], ...] = ()


def acl_rules(reach: RunnerReach) -> list[str]:
    """The ``ACL SETUSER`` rules (after the user name and password) for a runner's worker:
    its capabilities' queues and unacked keys, the exchange tables read-only, Celery's
    control and event channels, its own registration/drain keys, and the log streams of
    the jobs it holds the claim of (none of another job, even of its capability). No admin
    or dangerous command (FLUSHALL, CONFIG, ACL, KEYS, DEBUG...)."""
    rules = ["resetkeys", "resetchannels", "-@all", "+@all", "-@dangerous", "-@admin"]
    rw: list[str] = []
    for queue in sorted(reach.queues.values()):
        rw += queue_keys(queue)
        rw += queue_keys(runner_queue(queue, reach.name))  # jobs sent to it by name
        rw += unacked_keys(queue)
    rw += [log_stream_key(capability, job_id) for capability, job_id in sorted(reach.claims)]
    for key in (
        runner_key(reach.name),
        seen_key(reach.name),
        drain_key(reach.name),
        name_key(reach.name),
    ):
        rw.append(key)
    # Worker control: its pidbox binding, and the reply lists of whoever asks it.
    pidbox = [
        f"_kombu.binding.{PIDBOX_EXCHANGE}",
        f"_kombu.binding_permanent.{PIDBOX_EXCHANGE}",
        # kombu 5.7 refreshes expiring queues' bindings here (the pidbox queue expires).
        "_kombu.binding_deadlines",
    ]
    rules += ["~" + _literal(k) for k in rw]
    pidbox += [worker_node(c, reach.name) + f".{PIDBOX_EXCHANGE}*" for c in reach.queues]
    rules += ["~" + _literal(k) for k in pidbox]
    # Replies are pushed, never read: write-only, so a runner cannot take the answers
    # other workers send to ``celery control``, Flower or ``runner exec``.
    rules.append("%W~*." + _glob_escape(REPLY_EXCHANGE))
    # Routing tables are read only: a runner cannot bind another capability's routing
    # key to its own queue.
    for exchange in (EXCHANGE, REPLY_EXCHANGE):
        rules.append("%R~" + _glob_escape(f"_kombu.binding.{exchange}"))
    prefix = f"/{reach.db}."
    # kombu PSUBSCRIBEs the pidbox channel by its exact name, and Redis matches a
    # PSUBSCRIBE pattern against the allowed ones literally.
    rules.append("&" + _glob_escape(prefix + PIDBOX_EXCHANGE))
    rules.append("&" + _glob_escape(prefix + EVENT_EXCHANGE) + "/*")
    return rules


def _literal(key: str) -> str:
    """A key as an ACL pattern: literal, except a trailing ``*`` the caller put there."""
    if key.endswith("*"):
        return _glob_escape(key[:-1]) + "*"
    return _glob_escape(key)


def _host_port(parts: SplitResult) -> str:
    """The host (bracketed when IPv6) and port of a URL, without its credentials."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def broker_url_as(url: str, username: str, password: str) -> str:
    """``url`` with its credentials replaced by the runner's Redis user."""
    parts = urlsplit(url)
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{_host_port(parts)}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def broker_url_without_credentials(parts: SplitResult) -> str:
    """A broker URL with its user and password taken out (what a runner is given: it logs
    in as its own Redis user, from the credential the API gives it)."""
    return urlunsplit((parts.scheme, _host_port(parts), parts.path, parts.query, ""))


def broker_db(url: str) -> int:
    """The database number of a redis:// URL (0 when it names none)."""
    path = unquote(urlsplit(url).path).strip("/")
    return int(path) if path.isdigit() else 0
