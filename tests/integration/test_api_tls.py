"""The API over TLS on loopback, with a CA and certificate made at test time: served from
the settings (api_tls_cert, api_tls_key), trusted by the CLI and a runner through
api_ca_file, and refused in one line (naming the URL and the setting) when the client
does not trust it."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest

from ci_pool.api.server import make_server, running
from ci_pool.embedded import free_port
from ci_pool.store import identities
from ci_pool.worker.api_store import ApiRunnerStore
from tests.conftest import Harness
from tests.integration.test_api import make_token
from tests.tlscerts import make_tls

pytestmark = pytest.mark.integration


def _one_line_refusal(res: object, url: str) -> None:
    stderr = getattr(res, "stderr", "")
    assert getattr(res, "returncode", None) == 2, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert f"the API at {url} presents a certificate this machine does not trust" in stderr
    assert "api_ca_file (CI_POOL_API_CA_FILE)" in stderr


def test_the_api_serves_https_from_settings_and_clients_trust_api_ca_file(
    harness: Harness, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path / "tls", "127.0.0.1")
    stranger = make_tls(tmp_path / "stranger", "127.0.0.1", label="another")
    served = dataclasses.replace(
        harness, overrides={**harness.overrides, "api_tls_cert": tls.cert, "api_tls_key": tls.key}
    )
    admin = make_token(harness, "admin")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    store = harness.pool().store
    with running(make_server(served.settings(), "127.0.0.1", port, log_level="warning")):

        def client(**extra: object) -> Harness:
            over = {**harness.overrides, "api_url": url, "api_token": admin, **extra}
            return dataclasses.replace(harness, overrides=over)

        # The CLI through api_ca_file: the API answers over TLS.
        res = client(api_ca_file=tls.ca).cli("runner", "list", "--json")
        assert res.returncode == 0, res.stderr
        assert isinstance(json.loads(res.stdout), list)
        # A CA that did not sign it, or none (the system store): one line, exit 2.
        _one_line_refusal(client(api_ca_file=stranger.ca).cli("runner", "list"), url)
        _one_line_refusal(client().cli("runner", "list"), url)

        # A runner that does not trust the API does not register, and says why.
        token, _ = identities.create_registration(
            store, ("linux",), timedelta(hours=1), created_by="test"
        )
        cred = tmp_path / "runner" / "credential"
        runner = dataclasses.replace(
            harness,
            overrides={
                **harness.overrides,
                "api_url": url,
                "api_ca_file": stranger.ca,
                "registration_token": token,
                "runner_credential_file": cred,
                "runner_id": "tls-host-linux-1",
            },
        )
        res = runner.cli("worker", "--capability", "linux")
        _one_line_refusal(res, url)
        assert not cred.exists() and not cred.with_name("credential.redis").exists()

        # With the right CA, the runner's own store calls go through.
        credential, _ = identities.register(store, token, "tls-host-linux-1", host="tls-host")
        settings = dataclasses.replace(
            runner, overrides={**runner.overrides, "api_ca_file": tls.ca}
        ).settings()
        settings = settings.model_copy(update={"runner_credential": None})
        cred.parent.mkdir(parents=True, exist_ok=True)
        cred.write_text(credential + "\n")
        cred.chmod(0o600)
        api_store = ApiRunnerStore(settings)
        try:
            assert api_store.whoami()["name"] == "tls-host-linux-1"
        finally:
            api_store.client.close()
        identities.revoke_runner(store, "tls-host-linux-1", by="test")
