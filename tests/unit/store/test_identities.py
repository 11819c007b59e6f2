"""Runner identities on both store backends: a registration token is used once, names are
unique pool-wide, a revoked credential stops working and the record names who revoked it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from ci_pool.exceptions import InputError, NotFound
from ci_pool.store import Store
from ci_pool.store.identities import (
    RegistrationToken,
    create_registration,
    get_runner,
    list_runners,
    register,
    revoke_runner,
    verify_runner,
)
from ci_pool.store.models import utcnow


def test_a_registration_token_joins_one_runner_whose_credential_works_until_revoked(
    store: Store,
) -> None:
    token, _ = create_registration(store, ["linux", "iso"], timedelta(hours=1), created_by="ops")
    credential, runner = register(
        store, token, "build1-linux-1", host="build1", capabilities=["linux"]
    )
    assert runner.capabilities == ["linux"] and runner.host == "build1"
    assert credential.startswith("circ_") and token not in credential
    found = verify_runner(store, credential)
    assert found is not None and found.name == "build1-linux-1"
    with pytest.raises(InputError, match="used already"):
        register(store, token, "build2-linux-1")
    revoke_runner(store, "build1-linux-1", by="admin-alice")
    assert verify_runner(store, credential) is None
    gone = get_runner(store, "build1-linux-1")
    assert gone is not None and gone.revoked_by == "admin-alice" and gone.revoked_at is not None
    revoke_runner(store, "build1-linux-1", by="someone-else")  # the first record stays
    again = get_runner(store, "build1-linux-1")
    assert again is not None and again.revoked_by == "admin-alice"
    assert [r.name for r in list_runners(store)] == ["build1-linux-1"]


def test_names_are_unique_and_tokens_bound_what_a_runner_may_serve(store: Store) -> None:
    first, _ = create_registration(store, ["linux"], timedelta(hours=1))
    second, _ = create_registration(store, ["linux"], timedelta(hours=1))
    register(store, first, "host-a-linux-1")
    with pytest.raises(InputError, match="registered already"):
        register(store, second, "host-a-linux-1")
    with pytest.raises(InputError, match="does not allow capability iso"):
        register(store, second, "host-b-iso-1", capabilities=["iso"])
    with pytest.raises(InputError, match="runner name"):
        register(store, second, "Host_B linux")
    register(store, second, "host-b-linux-1")  # a refused attempt does not use the token up


def test_expired_unknown_and_foreign_secrets_are_refused(store: Store) -> None:
    token, row = create_registration(store, ["linux"], timedelta(hours=1))
    with store.session() as s:
        s.execute(
            update(RegistrationToken)
            .where(RegistrationToken.sha256 == row.sha256)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(InputError, match="unknown or expired"):
        register(store, token, "late-linux-1")
    with pytest.raises(InputError, match="unknown or expired"):
        register(store, "cirt_made-up", "any-linux-1")
    assert verify_runner(store, token) is None  # a registration token is no credential
    assert verify_runner(store, "") is None
    with pytest.raises(NotFound):
        revoke_runner(store, "nobody", by="ops")
    with pytest.raises(InputError, match="positive"):
        create_registration(store, ["linux"], timedelta(0))
