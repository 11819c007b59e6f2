"""Settings: ``CI_POOL_*`` environment over a ``ci-pool.toml`` file over built-in defaults."""

from __future__ import annotations

import sys
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ci_pool.addresses import host_matches, is_ip, refusal, split_host_port
from ci_pool.config_file import config_path, read_toml, up_defaults
from ci_pool.core.admission import Admission
from ci_pool.exceptions import ConfigError
from ci_pool.home import legacy_notice
from ci_pool.setting_groups import (
    ActionSettings,
    ApiSettings,
    ArtifactSettings,
    BrokerSettings,
    CheckoutSettings,
    RunnerSettings,
    TriggerSettings,
    WorkflowSettings,
)

_TOML_DATA: ContextVar[dict[str, Any]] = ContextVar("_TOML_DATA", default={})  # noqa: B039


class _TomlSource(PydanticBaseSettingsSource):
    """The parsed ci-pool.toml, ranked below the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _TOML_DATA.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML_DATA.get())


# Pydantic lists inherited fields base class first, so the areas are named last to first:
# the fields come in the order home, checkouts, broker, API, workflows, triggers, artifacts,
# actions, runners (the order validation errors are reported in).
class Settings(
    RunnerSettings,
    ActionSettings,
    ArtifactSettings,
    TriggerSettings,
    WorkflowSettings,
    ApiSettings,
    BrokerSettings,
    CheckoutSettings,
    BaseSettings,
):
    """Everything configurable; see README "Configuration". The fields live in one class per
    area (``ci_pool/setting_groups.py``); the checks that span areas are here."""

    model_config = SettingsConfigDict(env_prefix="CI_POOL_", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.visibility_timeout <= self.max_job_timeout:
            raise ValueError(
                f"visibility_timeout ({self.visibility_timeout}s) must be above max_job_timeout "
                f"({self.max_job_timeout}s), or the broker redelivers jobs that are still running"
            )
        if self.lease_ttl <= self.heartbeat_interval:
            raise ValueError("lease_ttl must be above heartbeat_interval")
        queues: dict[str, str] = {}
        for cap in self.capabilities.values():
            if cap.mode == "docker" and not cap.image:
                raise ValueError(f"capabilities.{cap.name}.image is required in docker mode")
            if cap.queue in queues:
                raise ValueError(
                    f"capabilities {queues[cap.queue]} and {cap.name} share queue {cap.queue!r}"
                )
            queues[cap.queue] = cap.name
        self._check_forges()
        if self.default_capability is not None and self.default_capability not in (
            self.capabilities
        ):
            raise ValueError(
                f"default_capability {self.default_capability!r} is not a capability; "
                f"capabilities that exist: {', '.join(sorted(self.capabilities))}"
            )
        return self

    def _check_forges(self) -> None:
        for key, forge in self.forges.items():
            host, port = split_host_port(key.lower())
            if not host or (port is not None and not port.isdigit()):
                raise ValueError(f"forges.{key}: the key is a repository host or host:port")
            api_host, api_port = forge.api_host
            for what, name, num in (("", host, int(port or 0)), (".api_url", api_host, api_port)):
                if not host_matches(self.git_hosts, name, num):
                    raise ValueError(
                        f"forges.{key}{what}: {name} is not in the git_hosts setting; add it "
                        "there first"
                    )
            if is_ip(api_host):
                why = refusal(api_host, allow_loopback=self.allow_loopback_git)
                if why is not None:
                    raise ValueError(f"forges.{key}.api_url is refused: {why}")

    @property
    def admission(self) -> Admission:
        """The rules every job is admitted by: routing, time limit, image, job count."""
        return Admission(
            self.capabilities,
            self.default_capability,
            self.max_job_timeout,
            self.max_jobs_per_pipeline,
            self.runner_groups,
        )


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings, turning every validation problem into a ConfigError naming the key."""
    path = config_path(config_file)
    data = read_toml(path) if path else {}
    data.pop("config", None)
    token = _TOML_DATA.set(up_defaults(data, overrides))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against README 'Configuration'"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(msg + more, key=key, file=str(path) if path else None) from None
    finally:
        _TOML_DATA.reset(token)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; says so on stderr when ``./.ci-pool`` holds a
    store that is not the home."""
    settings = load_settings()
    notice = legacy_notice(Path.cwd(), settings.home)
    if notice:
        print(notice, file=sys.stderr)
    return settings
