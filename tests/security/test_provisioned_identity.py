"""What provisioning gives a runner, and what the name-bound registration token it uses
allows: the runner's file never holds a store URL or the pool's Redis password, a token
bound to one runner's name joins no other, never revives a revoked runner, and a re-key
ends the old credential at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ci_pool.exceptions import InputError, ProvisioningError
from ci_pool.provision.credentials import read_credentials, runner_file
from ci_pool.provision.records import Redactor
from ci_pool.store import Store
from ci_pool.store.identities import (
    create_registration,
    register,
    revoke_runner,
    verify_runner,
    withdraw_registration,
)

BROKER_PASSWORD = "shared-broker-pw-1234"
STORE_PASSWORD = "store-db-pw-5678"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    s.init_schema()
    return s


def _operator_file(tmp_path: Path, api: str = "https://api.pool.example:8000") -> Path:
    path = tmp_path / "credentials.env"
    path.write_text(
        f"CI_POOL_API_URL={api}\n"
        f"CI_POOL_BROKER_URL=rediss://ci:{BROKER_PASSWORD}@broker.pool.example:6380/2\n"
        f"CI_POOL_STORE_URL=postgresql+psycopg://ci:{STORE_PASSWORD}@db.pool.example/ci\n"
    )
    return path


def test_a_provisioned_runner_file_holds_no_store_url_and_no_shared_password(
    tmp_path: Path,
) -> None:
    redact = Redactor()
    address = read_credentials(_operator_file(tmp_path), redact)
    text = runner_file(address, "build1-linux-1", "cirt_example-token-value").decode()
    assert "STORE_URL" not in text and "postgresql" not in text
    assert BROKER_PASSWORD not in text and STORE_PASSWORD not in text
    assert "CI_POOL_BROKER_URL='rediss://broker.pool.example:6380/2'" in text
    assert "CI_POOL_RUNNER_ID='build1-linux-1'" in text
    # Both passwords are scrubbed from anything provisioning records.
    assert redact(f"x {BROKER_PASSWORD} {STORE_PASSWORD} cirt_abcdefghijkl") == "x *** *** ***"


def test_plain_http_to_a_remote_api_is_refused(tmp_path: Path) -> None:
    path = _operator_file(tmp_path, api="http://api.pool.example:8000")
    with pytest.raises(ProvisioningError, match=r"credentials\.env:1: CI_POOL_API_URL must be"):
        read_credentials(path, Redactor())
    path.write_text(f"CI_POOL_BROKER_URL=redis://:{BROKER_PASSWORD}@b:6379/0\n")
    with pytest.raises(ProvisioningError, match="CI_POOL_API_URL is missing") as info:
        read_credentials(path, Redactor())
    assert BROKER_PASSWORD not in str(info.value)


def test_a_name_bound_token_joins_only_that_runner(store: Store) -> None:
    token, _ = create_registration(store, ["linux"], timedelta(hours=1), name="build1-linux-1")
    # Stolen from build1-linux-1's file, it cannot bring in another machine.
    with pytest.raises(InputError, match="is for runner 'build1-linux-1'"):
        register(store, token, "attacker-linux-1")
    credential, row = register(store, token, "build1-linux-1")
    assert row.name == "build1-linux-1" and verify_runner(store, credential) is not None


def test_a_rekey_ends_the_old_credential_and_never_revives_a_revoked_runner(
    store: Store,
) -> None:
    first, _ = create_registration(store, ["linux"], timedelta(hours=1), name="build1-linux-1")
    old, _ = register(store, first, "build1-linux-1")
    rotate, _ = create_registration(store, ["linux"], timedelta(hours=1), name="build1-linux-1")
    new, _ = register(store, rotate, "build1-linux-1")
    assert verify_runner(store, old) is None
    assert verify_runner(store, new) is not None

    # An unbound token cannot take the registered name over.
    unbound, _ = create_registration(store, ["linux"], timedelta(hours=1))
    with pytest.raises(InputError, match="registered already"):
        register(store, unbound, "build1-linux-1")

    revoke_runner(store, "build1-linux-1", by="admin")
    again, _ = create_registration(store, ["linux"], timedelta(hours=1), name="build1-linux-1")
    with pytest.raises(InputError, match="was revoked"):
        register(store, again, "build1-linux-1")
    assert verify_runner(store, new) is None


def test_a_withdrawn_token_is_refused(store: Store) -> None:
    token, _ = create_registration(store, ["linux"], timedelta(hours=1), name="build1-linux-1")
    assert withdraw_registration(store, token)
    with pytest.raises(InputError, match="unknown or expired"):
        register(store, token, "build1-linux-1")
