"""The Redis ACL rules of a registered runner, and the key names they are built from."""

from __future__ import annotations

from ci_pool.broker.keys import (
    RunnerReach,
    acl_rules,
    broker_db,
    broker_url_as,
    log_stream_key,
    unacked_keys,
)


def test_rules_name_only_the_runners_own_queues_keys_and_channels() -> None:
    rules = acl_rules(
        RunnerReach("b1-linux-1", {"linux": "linux"}, db=3, claims=(("linux", "j1"),))
    )
    keys = [r for r in rules if r.startswith(("~", "%R~", "%W~"))]
    assert "~linux" in keys and "~linux\x06\x169" in keys
    assert "~ci-pool:unacked:linux" in keys
    # The log stream of the job it holds, and no other job's.
    assert "~ci-pool:log:linux:j1" in keys
    assert not [k for k in keys if k.startswith("~ci-pool:log:") and k != "~ci-pool:log:linux:j1"]
    assert "~ci-pool:runner:b1-linux-1" in keys and "~ci-pool:drain:b1-linux-1" in keys
    # The routing table of the task exchange is read-only.
    assert "%R~_kombu.binding.ci-pool" in keys and "~_kombu.binding.ci-pool" not in keys
    # Control replies are pushed, never read back.
    assert "%W~*.reply.celery.pidbox" in keys and "~*.reply.celery.pidbox" not in keys
    assert not any("android" in k for k in keys)
    assert "&/3.celeryev/*" in rules and "&/3.celery.pidbox" in rules
    assert rules[:2] == ["resetkeys", "resetchannels"]
    assert "-@dangerous" in rules and "-@admin" in rules
    assert "~*" not in rules and "allkeys" not in rules


def test_glob_characters_in_names_are_literal() -> None:
    rules = acl_rules(RunnerReach("r1", {"we*ird": "q[1]"}, claims=(("we*ird", "j?"),)))
    assert "~q\\[1\\]" in rules
    assert "~ci-pool:log:we\\*ird:j\\?" in rules


def test_without_a_claim_no_log_stream_is_reachable() -> None:
    rules = acl_rules(RunnerReach("r1", {"linux": "linux"}))
    assert not [r for r in rules if "ci-pool:log:" in r]


def test_key_names_carry_the_capability() -> None:
    assert log_stream_key("linux", "j1") == "ci-pool:log:linux:j1"
    assert unacked_keys("iso")[0] == "ci-pool:unacked:iso"


def test_broker_url_as_the_runner_user() -> None:
    url = broker_url_as("redis://:old@10.0.0.5:6380/2", "runner-a", "p/w@x")
    assert url == "redis://runner-a:p%2Fw%40x@10.0.0.5:6380/2"
    assert broker_db(url) == 2 and broker_db("redis://h") == 0
    assert broker_url_as("rediss://[::1]/0", "u", "p") == "rediss://u:p@[::1]/0"
