"""The HTTP plumbing of the CLI's API client (requests, errors, answers read into models)
and the runner operations; ``ci_pool.cli.http_client.HttpClient`` adds jobs and pipelines."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ci_pool import __version__, defaults
from ci_pool.addresses import check_api_url
from ci_pool.apierrors import Model, api_error, error_body, read_answer, read_rows
from ci_pool.core.diagnostics import DiagnosticRecord, DiagnosticResult
from ci_pool.exceptions import CIPoolError, ConfigError, InfraError
from ci_pool.service.views import RunnerStatus
from ci_pool.settings import Settings
from ci_pool.tls import client_verify, untrusted_message

if TYPE_CHECKING:
    import httpx

    from ci_pool.service.identities import RunnerIdentityView, RunnerTokenPublic


class HttpCalls:
    """Requests to the HTTP API at ``settings.api_url``, with ``settings.api_token`` as
    bearer token; every failure a CIPoolError, every answer read into its model."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None):
        import httpx

        self.url = check_api_url(settings.api_url)
        self.settings = settings
        headers = {"User-Agent": f"ci-pool/{__version__}"}
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self._has_token = bool(token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(defaults.API_TIMEOUT, connect=defaults.API_CONNECT_TIMEOUT),
            transport=transport,
            verify=client_verify(settings, self.url),
        )

    def close(self) -> None:
        self._http.close()

    # -- transport and errors ------------------------------------------------------------

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """Network failures become InfraError naming the API's address."""
        import httpx

        try:
            yield
        except httpx.TimeoutException as exc:
            raise InfraError(
                f"the API at {self.url} did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            untrusted = untrusted_message(self.url, exc)
            if untrusted is not None:
                raise ConfigError(untrusted, key="api_ca_file") from None
            raise InfraError(
                f"cannot reach the API at {self.url} ({exc or type(exc).__name__}); check "
                "CI_POOL_API_URL and that `ci-pool api` runs there"
            ) from None

    def _error(self, res: httpx.Response) -> CIPoolError:
        """The CIPoolError local mode raises for the same problem."""
        body = error_body(res.text, res.reason_phrase)
        hint = "CI_POOL_API_TOKEN" if self._has_token else ""
        return api_error(self.url, res.status_code, body, token_hint=hint)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._reaching():
            res = self._http.request(method, path, **kwargs)
        if res.is_error:
            raise self._error(res)
        return res

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        res = self._call(method, path, **kwargs)
        try:
            return res.json()
        except ValueError:
            raise InfraError(
                f"the API at {self.url} answered {path} with something other than JSON"
            ) from None

    def _answer(self, cls: type[Model], data: Any, path: str) -> Model:
        return read_answer(cls, data, self.url, path)

    def _model(self, cls: type[Model], method: str, path: str, **kwargs: Any) -> Model:
        return self._answer(cls, self._json(method, path, **kwargs), path)

    def _page(self, cls: type[Model], path: str, **kwargs: Any) -> list[Model]:
        return read_rows(cls, self._json("GET", path, **kwargs), self.url, path)

    def _field(self, method: str, path: str, key: str, **kwargs: Any) -> Any:
        """One field of an answer that has no model of its own on this side."""
        data = self._json(method, path, **kwargs)
        if not isinstance(data, dict) or key not in data:
            raise InfraError(f"the API at {self.url} answered {path} without {key!r}")
        return data[key]


class RunnerCalls(HttpCalls):
    """The runner operations: the list, drain, scale, exec and identities."""

    def runners(self) -> list[RunnerStatus]:
        return self._page(RunnerStatus, "/v1/runners")

    def drain(self, runner_id: str) -> str:
        return str(self._field("POST", f"/v1/runners/{quote(runner_id, safe='')}/drain", "message"))

    def undrain(self, runner_id: str) -> str:
        path = f"/v1/runners/{quote(runner_id, safe='')}/undrain"
        return str(self._field("POST", path, "message"))

    def scale(self, capability: str, slots: int) -> list[str]:
        path = f"/v1/queues/{quote(capability, safe='')}/scale"
        lines = self._field("POST", path, "lines", json={"slots": slots})
        if not isinstance(lines, list):
            raise InfraError(f"the API at {self.url} answered {path} without a list of lines")
        return [str(line) for line in lines]

    def runner_exec(self, name: str, argv: list[str], timeout: float | None) -> DiagnosticResult:
        path = f"/v1/runners/{quote(name, safe='')}/exec"
        # The API waits for the command (up to its timeout) and the runner's answer.
        wait = (timeout or defaults.RUNNER_EXEC_MAX_TIMEOUT) + 2 * defaults.RUNNER_EXEC_REPLY_GRACE
        body = self._json("POST", path, json={"argv": argv, "timeout": timeout}, timeout=wait)
        return self._answer(DiagnosticResult, body, path)

    def runner_exec_log(self, runner: str | None, limit: int) -> list[DiagnosticRecord]:
        params: dict[str, str | int] = {"limit": limit}
        if runner:
            params["runner"] = runner
        return self._page(DiagnosticRecord, "/v1/runner-execs", params=params)

    def create_runner_token(
        self, capabilities: list[str], expires: str, name: str | None = None
    ) -> RunnerTokenPublic:
        from ci_pool.service.identities import RunnerTokenPublic

        body: dict[str, object] = {"capabilities": capabilities, "expires": expires}
        if name:
            body["name"] = name
        return self._model(RunnerTokenPublic, "POST", "/v1/runner-tokens", json=body)

    def revoke_runner(self, name: str) -> RunnerIdentityView:
        from ci_pool.service.identities import RunnerIdentityView

        path = f"/v1/runners/{quote(name, safe='')}/revoke"
        return self._model(RunnerIdentityView, "POST", path)

    def runner_identities(self) -> list[RunnerIdentityView]:
        from ci_pool.service.identities import RunnerIdentitiesPublic

        return self._model(RunnerIdentitiesPublic, "GET", "/v1/runner-identities").data
