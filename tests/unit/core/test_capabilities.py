"""Capabilities: validation, merging over the defaults, and routing of labels."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ci_pool.core.capabilities import (
    DEFAULT_CAPABILITIES,
    IGNORED_LABELS,
    Capability,
    merge_capabilities,
    route,
)
from ci_pool.exceptions import CapabilityNotFound, InputError


def caps_from(tables: dict[str, dict[str, object]] | None = None) -> dict[str, Capability]:
    return {n: Capability(**d) for n, d in merge_capabilities(tables).items()}


@pytest.fixture
def caps() -> dict[str, Capability]:
    return caps_from()


# -- route by name ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULT_CAPABILITIES))
def test_route_by_name(caps: dict[str, Capability], name: str) -> None:
    cap = route(caps, name)
    assert cap.name == name
    assert cap.queue == name


def test_route_by_name_with_its_own_labels(caps: dict[str, Capability]) -> None:
    assert route(caps, "linux", ["linux", "x64"]).name == "linux"


def test_route_by_name_with_self_hosted_label(caps: dict[str, Capability]) -> None:
    assert route(caps, "android", ["self-hosted", "android"]).name == "android"


def test_unknown_capability_lists_every_existing_one(caps: dict[str, Capability]) -> None:
    with pytest.raises(CapabilityNotFound) as info:
        route(caps, "macos")
    err = info.value
    assert isinstance(err, InputError)
    assert err.field == "capability"
    assert err.wanted == "macos"
    assert "macos" in str(err)
    for name in caps:
        assert name in str(err)
    assert sorted(err.existing) == sorted(caps)


def test_capability_lacking_a_requested_label(caps: dict[str, Capability]) -> None:
    with pytest.raises(InputError) as info:
        route(caps, "linux", ["linux", "gpu"])
    assert not isinstance(info.value, CapabilityNotFound)
    assert info.value.field == "labels"
    assert "gpu" in str(info.value)
    assert "'linux'" in str(info.value)


# -- route by labels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["linux"], "linux"),
        (["x64"], "linux"),
        (["linux", "x64"], "linux"),
        (["android"], "android"),
        (["flutter"], "flutter-web"),
        (["web"], "flutter-web"),
        (["flutter", "web"], "flutter-web"),
        (["flutter-web"], "flutter-web"),
        (["iso"], "iso"),
        (["deploy"], "deploy"),
    ],
)
def test_route_by_labels(caps: dict[str, Capability], labels: list[str], expected: str) -> None:
    assert route(caps, labels=labels).name == expected


def test_self_hosted_is_ignored(caps: dict[str, Capability]) -> None:
    assert "self-hosted" in IGNORED_LABELS
    assert route(caps, labels=["self-hosted", "android"]).name == "android"
    assert route(caps, labels=("self-hosted", "linux", "x64")).name == "linux"


def test_only_self_hosted_is_no_label_at_all(caps: dict[str, Capability]) -> None:
    with pytest.raises(InputError) as info:
        route(caps, labels=["self-hosted"])
    assert info.value.field == "labels"
    assert str(info.value) == (
        "labels: needs a label besides self-hosted: one of android, audit, deploy, "
        'flutter-web, iso, linux; or route such jobs with default_capability = "<name>" at '
        "the top of ci-pool.toml"
    )


def test_neither_name_nor_labels(caps: dict[str, Capability]) -> None:
    with pytest.raises(InputError) as info:
        route(caps)
    assert info.value.field == "capability"


def test_labels_nobody_has_lists_every_capability(caps: dict[str, Capability]) -> None:
    with pytest.raises(CapabilityNotFound) as info:
        route(caps, labels=["self-hosted", "macos", "arm64"])
    msg = str(info.value)
    assert "arm64" in msg and "macos" in msg
    assert "self-hosted" not in msg
    for name in caps:
        assert name in msg


def test_labels_split_across_two_capabilities_match_none(caps: dict[str, Capability]) -> None:
    with pytest.raises(CapabilityNotFound):
        route(caps, labels=["linux", "android"])


def test_ambiguous_labels_name_the_candidates() -> None:
    caps = caps_from(
        {
            "gpu-a": {"image": "a", "labels": ["gpu", "cuda"]},
            "gpu-b": {"image": "b", "labels": ["gpu"]},
        }
    )
    with pytest.raises(InputError) as info:
        route(caps, labels=["gpu"])
    err = info.value
    assert not isinstance(err, CapabilityNotFound)
    assert err.field == "labels"
    assert "gpu-a" in str(err) and "gpu-b" in str(err)
    # Narrowing the labels removes the ambiguity.
    assert route(caps, labels=["gpu", "cuda"]).name == "gpu-a"


def test_exact_name_among_labels_wins_over_ambiguity() -> None:
    caps = caps_from({"linux-arm": {"image": "arm", "labels": ["linux", "arm64"]}})
    # Both 'linux' and 'linux-arm' carry the label 'linux'; the one named so wins.
    assert route(caps, labels=["linux"]).name == "linux"
    assert route(caps, labels=["arm64"]).name == "linux-arm"
    assert route(caps, labels=["linux", "arm64"]).name == "linux-arm"


def test_label_set_contains_the_name() -> None:
    cap = Capability(name="x", queue="x", image="i", labels=("a", "b"))
    assert cap.label_set == frozenset({"x", "a", "b"})


# -- merge_capabilities ----------------------------------------------------------------


def test_merge_none_gives_the_defaults() -> None:
    merged = merge_capabilities(None)
    assert (
        set(merged)
        == set(DEFAULT_CAPABILITIES)
        == {"linux", "android", "flutter-web", "iso", "deploy", "audit"}
    )
    for name, table in merged.items():
        assert table["name"] == name
        assert table["queue"] == name
        Capability(**table)


def test_merge_overrides_a_default_and_keeps_the_rest() -> None:
    merged = merge_capabilities({"linux": {"image": "example/linux:2", "cpus": 2}})
    assert merged["linux"]["image"] == "example/linux:2"
    assert merged["linux"]["cpus"] == 2
    assert merged["linux"]["labels"] == DEFAULT_CAPABILITIES["linux"]["labels"]
    assert merged["linux"]["queue"] == "linux"
    assert merged["android"]["image"] == DEFAULT_CAPABILITIES["android"]["image"]


def test_merge_does_not_modify_the_defaults() -> None:
    before = {k: dict(v) for k, v in DEFAULT_CAPABILITIES.items()}
    merge_capabilities({"linux": {"image": "changed"}, "new": {"image": "n"}})
    assert before == DEFAULT_CAPABILITIES
    assert merge_capabilities(None)["linux"]["image"] == "ci-pool/linux:latest"


def test_merge_adds_a_new_capability() -> None:
    merged = merge_capabilities({"windows": {"image": "w", "labels": ["windows"]}})
    assert merged["windows"] == {
        "name": "windows",
        "queue": "windows",
        "image": "w",
        "labels": ["windows"],
    }
    assert set(DEFAULT_CAPABILITIES) <= set(merged)


def test_merge_name_is_always_the_table_key() -> None:
    merged = merge_capabilities({"linux": {"name": "other"}})
    assert merged["linux"]["name"] == "linux"


def test_merge_accepts_capability_objects() -> None:
    cap = Capability(name="linux", queue="linux-q", image="img")
    merged = merge_capabilities({"linux": cap})
    assert merged["linux"]["queue"] == "linux-q"
    assert merged["linux"]["image"] == "img"


def test_merge_rejects_a_non_table() -> None:
    with pytest.raises(ValueError, match=r"capabilities\.linux must be a table"):
        merge_capabilities({"linux": "ci-pool/linux:latest"})


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Linux", "", "-linux", "lin ux", "linux/arm", "a" * 64, "linux:x", ".hidden"]
)
def test_invalid_name_rejected(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Capability(name=name, queue="q", image="i")
    assert info.value.errors()[0]["loc"] == ("name",)


def test_invalid_queue_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        Capability(name="ok", queue="Bad Queue", image="i")
    assert info.value.errors()[0]["loc"] == ("queue",)


@pytest.mark.parametrize("name", ["a", "linux", "flutter-web", "x.y_z-1", "a" * 63])
def test_valid_names(name: str) -> None:
    assert Capability(name=name, queue=name, image="i").name == name


@pytest.mark.parametrize("memory", ["8gb", "lots", "-1g", "1.5g", "", "4 g", "4t"])
def test_invalid_memory_rejected(memory: str) -> None:
    with pytest.raises(ValidationError) as info:
        Capability(name="x", queue="x", image="i", memory=memory)
    assert info.value.errors()[0]["loc"] == ("memory",)


@pytest.mark.parametrize("memory", ["512m", "4g", "4G", "1024", "100k", "10b", None])
def test_valid_memory(memory: str | None) -> None:
    assert Capability(name="x", queue="x", image="i", memory=memory).memory == memory


@pytest.mark.parametrize(
    "field", [{"cpus": 0}, {"pids_limit": 0}, {"default_timeout": 0}, {"mode": "vm"}, {"foo": 1}]
)
def test_other_invalid_fields(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Capability(name="x", queue="x", image="i", **field)


def test_capability_is_frozen() -> None:
    cap = Capability(name="x", queue="x", image="i")
    with pytest.raises(ValidationError):
        cap.image = "other"  # type: ignore[misc]


# -- routing labels as workflows write them ----------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [["Linux"], ["self-hosted", "Linux", "X64"], ["SELF-HOSTED", "LINUX"], ["x64", "LiNuX"]],
)
def test_labels_match_whatever_their_case(caps: dict[str, Capability], labels: list[str]) -> None:
    assert route(caps, labels=labels).name == "linux"


def test_configured_labels_in_any_case_match(caps: dict[str, Capability]) -> None:
    mixed = caps_from({"linux": {"labels": ["GPU"]}})
    assert route(mixed, labels=["gpu"]).name == "linux"
    assert route(mixed, capability="Linux", labels=["Gpu"]).name == "linux"


def test_configured_labels_add_to_the_defaults() -> None:
    merged = caps_from({"linux": {"labels": ["gpu", "x64"]}})
    assert merged["linux"].labels == ("linux", "x64", "gpu")
    # The built-in labels still route, and so does the new one.
    for labels in (["linux"], ["x64"], ["gpu"], ["self-hosted", "linux", "gpu"]):
        assert route(merged, labels=labels).name == "linux"


def test_replace_labels_keeps_only_the_configured_ones() -> None:
    merged = caps_from({"linux": {"labels": ["gpu"], "replace_labels": True}})
    assert merged["linux"].labels == ("gpu",)
    with pytest.raises(CapabilityNotFound):
        route(merged, labels=["x64"])
    assert route(merged, labels=["gpu"]).name == "linux"


def test_a_dumped_capability_merges_back_to_itself() -> None:
    """Workers get their capability as JSON (CI_POOL_CAPABILITIES): it must not change."""
    for table in ({"labels": ["gpu"]}, {"labels": ["gpu"], "replace_labels": True}):
        once = caps_from({"linux": table})["linux"]
        again = caps_from({"linux": once.model_dump()})["linux"]
        assert again == once


def test_default_capability_takes_jobs_labelled_only_self_hosted(
    caps: dict[str, Capability],
) -> None:
    assert route(caps, labels=["self-hosted"], default="linux").name == "linux"
    assert route(caps, labels=["Self-Hosted"], default="audit").name == "audit"
    # Only those: other labels route as always, and no labels at all is still an error.
    assert route(caps, labels=["self-hosted", "android"], default="linux").name == "android"
    with pytest.raises(InputError, match="give a capability or at least one label"):
        route(caps, default="linux")
    with pytest.raises(CapabilityNotFound):
        route(caps, labels=["self-hosted", "macos"], default="linux")


def test_the_design_documents_labels_route(caps: dict[str, Capability]) -> None:
    assert route(caps, labels=["self-hosted", "iso", "privileged"]).name == "iso"
    assert route(caps, labels=["privileged"]).name == "iso"
    assert route(caps, labels=["self-hosted", "audit"]).name == "audit"
    audit = caps["audit"]
    assert (audit.refs, audit.repos, audit.require_signature) == (None, None, False)
    assert audit.image == caps["linux"].image and audit.mode == "docker"


def test_an_unknown_label_says_how_to_map_it(caps: dict[str, Capability]) -> None:
    with pytest.raises(CapabilityNotFound) as info:
        route(caps, labels=["self-hosted", "Linux", "GPU"])
    assert str(info.value) == (
        "capability: no capability matches 'labels gpu,linux'; capabilities that exist: "
        "android, audit, deploy, flutter-web, iso, linux; to route it, map the label in "
        'ci-pool.toml: [capabilities.linux] labels = ["gpu"] (labels add to the '
        "capability's own)"
    )


@pytest.mark.parametrize(
    ("labels", "snippet"),
    [
        (["macos"], '[capabilities.<name>] labels = ["macos"]'),
        (["ubuntu-latest"], '[capabilities.linux] labels = ["ubuntu-latest"]'),
        (["android", "arm64"], '[capabilities.android] labels = ["arm64"]'),
    ],
)
def test_the_mapping_hint_names_the_likely_capability(
    caps: dict[str, Capability], labels: list[str], snippet: str
) -> None:
    with pytest.raises(CapabilityNotFound) as info:
        route(caps, labels=labels)
    assert info.value.hint.endswith(f"{snippet} (labels add to the capability's own)")
