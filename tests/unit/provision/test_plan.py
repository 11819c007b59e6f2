"""The pure parts of provisioning: deciding actions from observed state, plan ids, and the
redaction every record and message goes through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ci_pool.exceptions import InputError
from ci_pool.provision.plan import PlanRequest, decide, format_plan, normalize_profile, plan_id
from ci_pool.provision.records import Records, Redactor

PROFILE = {"description": "d", "config": {"limits.cpu": "4"}, "devices": {}}


def inst(name: str, status: str = "Running", **config: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "type": "container",
        "profiles": ["default", "ci-pool-linux"],
        "config": config,
    }


def observed(
    *instances: dict[str, Any], profile: dict[str, Any] | None = PROFILE
) -> dict[str, Any]:
    return {"host_key": "k", "incus": True, "instances": list(instances), "profile": profile}


MANAGED = {"user.ci-pool.capability": "linux", "user.ci-pool.managed": "true"}


def kinds(actions: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(a["kind"], a["target"]) for a in actions]


def test_empty_host_creates_the_profile_and_every_runner() -> None:
    actions, blockers = decide("linux", 2, observed(profile=None), PROFILE, "h")
    assert blockers == []
    assert kinds(actions) == [
        ("reconcile", "profile:ci-pool-linux"),
        ("create", "h-linux-1"),
        ("create", "h-linux-2"),
    ]


def test_each_kind_of_existing_container() -> None:
    obs = observed(
        inst("h-linux-1", **MANAGED),
        inst("h-linux-2", "Stopped", **MANAGED),
        inst("h-linux-3", **{"user.ci-pool.capability": "linux"}),
        {**inst("h-linux-4", **MANAGED), "profiles": ["default"]},
        inst("h-linux-9", **MANAGED),
    )
    actions, blockers = decide("linux", 4, obs, PROFILE, "h")
    assert blockers == []
    assert kinds(actions) == [
        ("reconcile", "h-linux-4"),
        ("adopt", "h-linux-3"),
        ("restart", "h-linux-2"),
        ("remove", "h-linux-9"),
        ("keep", "h-linux-1"),
        ("keep", "profile:ci-pool-linux"),
    ]


def test_a_foreign_instance_with_our_name_is_a_clash() -> None:
    vm = {**inst("h-linux-2", **MANAGED), "type": "virtual-machine"}
    _, blockers = decide("linux", 2, observed(inst("h-linux-1"), vm), PROFILE, "h")
    assert [b["code"] for b in blockers] == ["name_clash", "name_clash"]
    assert "h-linux-1" in blockers[0]["message"] and "unset" in blockers[0]["message"]


def test_profile_drift_names_the_keys() -> None:
    have = normalize_profile({"description": "d", "config": {"limits.cpu": "2"}, "devices": {}})
    actions, _ = decide("linux", 1, observed(profile=have), PROFILE, "h")
    assert actions[0]["kind"] == "reconcile" and "limits.cpu" in actions[0]["detail"]


def test_count_zero_removes_managed_runners_only() -> None:
    obs = observed(inst("h-linux-1", **MANAGED), inst("h-linux-2"))
    actions, blockers = decide("linux", 0, obs, PROFILE, "h")
    assert kinds(actions) == [("remove", "h-linux-1")] and blockers == []


def test_a_revoked_runner_name_is_never_planned_again() -> None:
    # h-linux-1 was removed for good; h-linux-2 was revoked but its container is still there.
    obs = observed(inst("h-linux-2", **MANAGED), inst("h-linux-3", **MANAGED))
    actions, blockers = decide("linux", 2, obs, PROFILE, "h", retired=["h-linux-1", "h-linux-2"])
    assert blockers == []
    assert kinds(actions) == [
        ("create", "h-linux-4"),
        ("remove", "h-linux-2"),
        ("keep", "h-linux-3"),
        ("keep", "profile:ci-pool-linux"),
    ]


def test_plan_id_depends_on_both_states() -> None:
    a = plan_id({"count": 1}, observed())
    assert a == plan_id({"count": 1}, observed()) and len(a) == 16
    assert a != plan_id({"count": 2}, observed())
    assert a != plan_id({"count": 1}, observed(inst("h-linux-1")))


def test_blocked_plan_text_says_nothing_can_be_applied() -> None:
    plan = {
        "id": "0" * 16,
        "desired": {"count": 1, "capability": "linux", "user": "root", "host": "h", "port": 22},
        "observed": {},
        "actions": [],
        "blockers": [{"code": "incus_missing", "message": "install it"}],
    }
    text = format_plan(plan)
    assert "BLOCKED" in text and "blocker incus_missing: install it" in text


def test_request_validation_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "kh").write_text("")
    (tmp_path / "id").write_text("")
    ok = {"known_hosts": tmp_path / "kh", "identity": tmp_path / "id"}
    for bad, field in (
        ({"host": "-oProxyCommand=x"}, "--host"),
        ({"port": 0}, "--port"),
        ({"count": -1}, "--count"),
        ({"image": "x y"}, "--image"),
        ({"package": "ci-pool; rm -rf /"}, "--package"),
        ({"identity": tmp_path / "nope"}, "--identity"),
    ):
        req = PlanRequest(**{"host": "h", "capability": "linux", "count": 1, **ok, **bad})
        with pytest.raises(InputError) as info:
            req.checked()
        assert info.value.field == field


def test_redactor_scrubs_registered_secrets_tokens_and_url_passwords() -> None:
    r = Redactor(['pa"ss-word'])
    assert r('x pa"ss-word y') == "x *** y"
    assert r('{"k": "pa\\"ss-word"}') == '{"k": "***"}'
    assert r("token cip_abcdefghijklmnop end") == "token *** end"
    assert r("rediss://:hunter22@h:6380/0 and postgresql://ci:pw@db/x") == (
        "rediss://:***@h:6380/0 and postgresql://ci:***@db/x"
    )


def test_audit_is_append_only_json_lines_and_redacted(tmp_path: Path) -> None:
    records = Records(tmp_path)
    redact = Redactor(["s3cret-value"])
    records.audit({"event": "apply", "state": "failed", "error": "s3cret-value leaked"}, redact)
    records.audit({"event": "apply", "state": "completed", "plan_id": "p"}, redact)
    text = records.audit_path.read_text()
    assert "s3cret-value" not in text and len(text.splitlines()) == 2
    assert [r["state"] for r in records.audit_records()] == ["failed", "completed"]
    assert records.audit_path.stat().st_mode & 0o077 == 0
    with pytest.raises(InputError, match="16 hex digits"):
        records.load_plan("../../etc/passwd")


def test_outdated_runners_are_upgraded_with_why(tmp_path: Path) -> None:
    from ci_pool.provision.templates import render
    from ci_pool.provision.upgrade import applied_record
    from ci_pool.settings import load_settings

    settings = load_settings(None, home=tmp_path / "home")
    cap = settings.capabilities["linux"]
    old = applied_record(render(settings, cap, "ci-pool==0.9"))
    new = applied_record(render(settings, cap, "ci-pool==1.0"))
    assert old["user.ci-pool.unit-sha256"] == new["user.ci-pool.unit-sha256"]
    changed_unit = {**old, "user.ci-pool.unit-sha256": "0" * 64}
    changed_profile = {**new, "user.ci-pool.profile-sha256": "0" * 64}
    obs = observed(
        inst("h-linux-1", **MANAGED, **old),
        inst("h-linux-2", **MANAGED, **changed_unit),
        inst("h-linux-3", **MANAGED, **changed_profile),
        inst("h-linux-4", **MANAGED, **new),
        inst("h-linux-5", **MANAGED),  # made before ci-pool recorded what it applied
        inst("h-linux-6", "Stopped", **MANAGED, **old),  # started first, upgraded later
    )
    actions, blockers = decide("linux", 6, obs, PROFILE, "h", applied=new)
    assert blockers == []
    got = {a["target"]: (a["kind"], a["detail"]) for a in actions}
    assert got["h-linux-1"] == ("upgrade", "ci-pool 0.9 -> 1.0")
    assert got["h-linux-2"] == ("upgrade", "ci-pool 0.9 -> 1.0, unit changed")
    assert got["h-linux-3"] == ("upgrade", "profile changed")
    assert got["h-linux-4"][0] == "keep"
    assert got["h-linux-5"] == (
        "upgrade",
        "ci-pool unknown -> 1.0, unit changed, profile changed",
    )
    assert got["h-linux-6"][0] == "restart"
    # Upgrades run after restarts and before creates.
    order = [a["kind"] for a in actions if a["kind"] != "keep"]
    assert order == ["restart", *["upgrade"] * 4]


def test_a_lane_change_moves_the_unit_digest_and_the_package_list_the_profile(
    tmp_path: Path,
) -> None:
    import shutil

    from ci_pool.provision.templates import TEMPLATES_DIR, render
    from ci_pool.settings import load_settings

    settings = load_settings(None, home=tmp_path / "home")
    cap = settings.capabilities["iso"]
    before = render(settings, cap, "ci-pool==1.0")
    copy = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    (copy / "systemd" / "iso-lane.conf").write_text("[Service]\nNoNewPrivileges=no\n")
    (copy / "lanes" / "iso" / "packages").write_text("live-build\nsudo\nsquashfs-tools\n")
    after = render(settings, cap, "ci-pool==1.0", copy)
    assert after.unit_digest != before.unit_digest
    assert after.profile_digest != before.profile_digest
    assert "squashfs-tools" in after.packages
