"""Settings: CI_POOL_* environment over ci-pool.toml over the built-in defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ci_pool import defaults
from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CI_POOL_* variable of the calling shell leaks in, and no ./ci-pool.toml is found."""
    for key in list(os.environ):
        if key.startswith("CI_POOL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "ci-pool.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path | None, **overrides: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(path, **overrides)
    return info.value


# -- defaults --------------------------------------------------------------------------


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""))
    assert isinstance(s, Settings)
    assert s.max_attempts == defaults.MAX_ATTEMPTS
    assert s.lease_ttl == defaults.LEASE_TTL
    assert s.visibility_timeout == defaults.VISIBILITY_TIMEOUT
    assert s.max_job_timeout == defaults.MAX_JOB_TIMEOUT
    assert s.allow_local_repos is False
    assert set(s.capabilities) == {"linux", "android", "flutter-web", "iso", "deploy", "audit"}


def test_no_file_at_all_gives_defaults() -> None:
    s = load_settings()
    assert set(s.capabilities) == {"linux", "android", "flutter-web", "iso", "deploy", "audit"}


def test_default_capabilities(tmp_path: Path) -> None:
    caps = load_settings(write(tmp_path, "")).capabilities
    linux, android, web, iso, deploy = (
        caps[n] for n in ("linux", "android", "flutter-web", "iso", "deploy")
    )
    assert (linux.mode, linux.image, linux.queue) == ("docker", "ci-pool/linux:latest", "linux")
    assert linux.label_set == {"linux", "x64"}
    assert (android.image, android.memory) == ("ci-pool/android:latest", "8g")
    assert web.image == "ci-pool/flutter-web:latest"
    assert web.label_set == {"flutter-web", "flutter", "web"}
    assert iso.mode == "host"
    assert iso.image == ""
    assert iso.privileged is True
    assert iso.default_timeout == 7200
    assert (deploy.image, deploy.network) == ("ci-pool/deploy:latest", "host")
    for name, cap in caps.items():
        assert cap.name == name
        assert cap.queue == name
    assert linux.network == "none"


# -- file values -----------------------------------------------------------------------


def test_override_image_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, '[capabilities.linux]\nimage = "example/linux:2"\n')
    caps = load_settings(path).capabilities
    assert caps["linux"].image == "example/linux:2"
    assert caps["linux"].label_set == {"linux", "x64"}
    assert caps["android"].image == "ci-pool/android:latest"
    assert set(caps) == {"linux", "android", "flutter-web", "iso", "deploy", "audit"}


def test_add_a_capability(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[capabilities.gpu]\nimage = "example/cuda:12"\nlabels = ["gpu", "cuda"]\n'
        'cpus = 8\nmemory = "32g"\n',
    )
    caps = load_settings(path).capabilities
    gpu = caps["gpu"]
    assert (gpu.name, gpu.queue, gpu.image, gpu.cpus, gpu.memory) == (
        "gpu",
        "gpu",
        "example/cuda:12",
        8,
        "32g",
    )
    assert gpu.labels == ("gpu", "cuda")
    assert {"linux", "android", "flutter-web", "iso", "deploy", "audit"} < set(caps)


def test_top_level_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "max_attempts = 5\nlease_ttl = 12.5\nallow_local_repos = true\n"
        'git_url_rewrites = { "git://internal/" = "https://github.com/" }\n',
    )
    s = load_settings(path)
    assert s.max_attempts == 5
    assert s.lease_ttl == 12.5
    assert s.allow_local_repos is True
    assert s.git_url_rewrites == {"git://internal/": "https://github.com/"}


def test_config_key_in_file_is_ignored(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, 'config = "elsewhere.toml"\n')).max_attempts == 3


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "max_attempts = 7\n", name="other.toml")
    monkeypatch.setenv("CI_POOL_CONFIG", str(path))
    assert load_settings().max_attempts == 7


def test_config_file_in_cwd(tmp_path: Path) -> None:
    write(tmp_path, "max_attempts = 6\n")
    assert load_settings().max_attempts == 6


# -- precedence ------------------------------------------------------------------------


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "max_attempts = 5\n")
    monkeypatch.setenv("CI_POOL_MAX_ATTEMPTS", "9")
    assert load_settings(path).max_attempts == 9


def test_keyword_overrides_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "max_attempts = 5\n")
    monkeypatch.setenv("CI_POOL_MAX_ATTEMPTS", "9")
    assert load_settings(path, max_attempts=2).max_attempts == 2


def test_invalid_env_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_POOL_MAX_ATTEMPTS", "0")
    err = config_error(write(tmp_path, ""))
    assert err.key == "max_attempts"


def test_file_is_read_per_call(tmp_path: Path) -> None:
    a = write(tmp_path, "max_attempts = 4\n", name="a.toml")
    b = write(tmp_path, "", name="b.toml")
    assert load_settings(a).max_attempts == 4
    assert load_settings(b).max_attempts == 3


# -- errors ----------------------------------------------------------------------------


def test_misspelled_capability_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[capabilities.linux]\nimgae = "x"\n')
    err = config_error(path)
    assert err.key == "capabilities.linux.imgae"
    assert err.file == str(path)
    assert "capabilities.linux.imgae" in str(err)
    assert str(path) in str(err)
    assert "unknown key" in str(err)


def test_misspelled_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "lease_tll = 3\n")
    err = config_error(path)
    assert err.key == "lease_tll"
    assert "lease_tll" in str(err) and str(path) in str(err)
    assert err.exit_code == 2


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[capabilities.linux\nimage = \n")
    err = config_error(path)
    assert err.file == str(path)
    assert str(path) in str(err)
    assert "TOML" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    err = config_error(path)
    assert err.file == str(path)
    assert "not found" in str(err)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[capabilities.android]\nmemory = "lots"\n')
    err = config_error(path)
    assert err.key == "capabilities.android.memory"
    assert str(path) in str(err)


def test_capabilities_not_a_table(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, 'capabilities = "linux"\n'))
    assert err.key == "capabilities"


@pytest.mark.parametrize(("visibility", "max_job"), [(3600, 3600), (100, 3600)])
def test_visibility_timeout_must_exceed_max_job_timeout(
    tmp_path: Path, visibility: int, max_job: int
) -> None:
    path = write(tmp_path, f"visibility_timeout = {visibility}\nmax_job_timeout = {max_job}\n")
    err = config_error(path)
    assert "visibility_timeout" in str(err) and "max_job_timeout" in str(err)
    assert str(path) in str(err)


def test_visibility_timeout_above_max_job_timeout_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "visibility_timeout = 7201\nmax_job_timeout = 7200\n")
    s = load_settings(path)
    assert (s.visibility_timeout, s.max_job_timeout) == (7201, 7200)


def test_lease_ttl_must_exceed_heartbeat(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "lease_ttl = 5\nheartbeat_interval = 5\n"))
    assert "lease_ttl" in str(err)


def test_docker_capability_needs_an_image(tmp_path: Path) -> None:
    path = write(tmp_path, '[capabilities.gpu]\nlabels = ["gpu"]\n')
    err = config_error(path)
    assert "capabilities.gpu.image" in str(err)
    assert str(path) in str(err)


def test_default_capability_image_cannot_be_blanked(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, '[capabilities.linux]\nimage = ""\n'))
    assert "capabilities.linux.image" in str(err)


def test_host_capability_needs_no_image(tmp_path: Path) -> None:
    path = write(tmp_path, '[capabilities.bare]\nmode = "host"\n')
    assert load_settings(path).capabilities["bare"].image == ""


def test_two_capabilities_on_one_queue(tmp_path: Path) -> None:
    path = write(tmp_path, '[capabilities.linux2]\nimage = "x"\nqueue = "linux"\n')
    err = config_error(path)
    assert "share queue 'linux'" in str(err)
    assert "linux2" in str(err)


def test_small_max_job_timeout_with_longer_capability_default(tmp_path: Path) -> None:
    # iso's default_timeout (7200) is above it; Pool.prepare clamps it at submit time.
    s = load_settings(write(tmp_path, "max_job_timeout = 3600\nvisibility_timeout = 4000\n"))
    assert s.max_job_timeout == 3600
    assert s.capabilities["iso"].default_timeout == 7200


def test_more_errors_are_counted(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "lease_tll = 3\nmax_attemps = 2\n"))
    assert "(and 1 more)" in str(err)


# -- derived paths ---------------------------------------------------------------------


def test_resolved_store_url_and_workspace(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""), home=tmp_path / "home")
    assert s.resolved_store_url == f"sqlite:///{(tmp_path / 'home' / 'ci-pool.db').resolve()}"
    assert s.resolved_workspace_root == (tmp_path / "home" / "workspaces").resolve()
    s2 = load_settings(None, store_url="postgresql://db/ci", workspace_root=tmp_path / "ws")
    assert s2.resolved_store_url == "postgresql://db/ci"
    assert s2.resolved_workspace_root == (tmp_path / "ws").resolve()


# -- [vars] -------------------------------------------------------------------------------


def test_vars_table(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[vars]\nDEPLOY_HOST = "staging"\n_X1 = ""\n'))
    assert s.vars == {"DEPLOY_HOST": "staging", "_X1": ""}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[vars]\n"1BAD" = "x"\n', "'1BAD' is not a variable name"),
        ('[vars]\n"A-B" = "x"\n', "'A-B' is not a variable name"),
        (f'[vars]\nBIG = "{"x" * (48 * 1024 + 1)}"\n', "BIG: the value is over 49152 bytes"),
        ("[vars]\nN = 3\n", "vars.N"),
    ],
)
def test_bad_vars_are_named(tmp_path: Path, text: str, words: str) -> None:
    err = config_error(write(tmp_path, text))
    assert words in str(err), str(err)


# -- routing: labels and the default capability -----------------------------------------


def test_toml_labels_add_to_a_capability_and_can_replace_them(tmp_path: Path) -> None:
    s = load_settings(
        write(
            tmp_path,
            '[capabilities.linux]\nlabels = ["gpu"]\n\n'
            '[capabilities.android]\nlabels = ["phone"]\nreplace_labels = true\n',
        )
    )
    assert s.capabilities["linux"].labels == ("linux", "x64", "gpu")
    assert s.capabilities["android"].labels == ("phone",)


def test_default_capability_routes_self_hosted_only_jobs(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, 'default_capability = "linux"\nmax_job_timeout = 600\n'))
    assert s.admission.default_capability == "linux"
    assert s.admission.max_job_timeout == 600
    assert s.admission.route(labels=["self-hosted"]).name == "linux"


def test_default_capability_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, 'default_capability = "gpu"\n')
    err = config_error(path)
    assert str(err) == (
        f"{path}: default_capability 'gpu' is not a capability; capabilities that exist: "
        "android, audit, deploy, flutter-web, iso, linux"
    )
