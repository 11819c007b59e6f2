"""The API's TLS files and a client's trust: what is wrong with them is said in one line
naming the setting to fix."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings, load_settings
from ci_pool.tls import client_verify, server_files, untrusted_message
from tests.tlscerts import make_tls


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return load_settings(empty, home=tmp_path / "home", **overrides)


def test_server_files_load_as_a_pair_or_say_which_setting_is_wrong(tmp_path: Path) -> None:
    one = make_tls(tmp_path / "one", "127.0.0.1")
    other = make_tls(tmp_path / "other", "127.0.0.1")
    assert server_files(None, None) is None
    assert server_files(one.cert, one.key) == (one.cert, one.key)

    with pytest.raises(ConfigError, match="both --tls-cert and --tls-key") as got:
        server_files(one.cert, None)
    assert got.value.key == "api_tls_key"
    with pytest.raises(ConfigError, match=r"cannot read .*missing\.key .*api_tls_key") as got:
        server_files(one.cert, tmp_path / "missing.key")
    assert got.value.key == "api_tls_key"
    with pytest.raises(ConfigError, match=r"cannot read .* api_tls_cert"):
        server_files(tmp_path, one.key)  # a directory
    with pytest.raises(ConfigError, match="not a PEM certificate and its private key"):
        server_files(one.cert, other.key)  # a key that does not match
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="not a PEM certificate and its private key"):
        server_files(garbage, one.key)


def test_a_client_trusts_api_ca_file_or_the_system_store(tmp_path: Path) -> None:
    files = make_tls(tmp_path / "tls", "127.0.0.1")
    url = "https://10.231.0.1:8443"
    # Plain http on loopback needs no context; https without api_ca_file: the system store.
    assert client_verify(_settings(tmp_path), "http://127.0.0.1:8080") is True
    assert isinstance(client_verify(_settings(tmp_path), url), ssl.SSLContext)
    context = client_verify(_settings(tmp_path, api_ca_file=files.ca), url)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("ci-pool test CA" in str(c["subject"]) for c in context.get_ca_certs())

    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ConfigError, match=r"cannot load the CA bundle .*no-such-ca\.pem") as got:
        client_verify(_settings(tmp_path, api_ca_file=missing), url)
    assert got.value.key == "api_ca_file" and "CI_POOL_API_CA_FILE" in str(got.value)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no PEM certificate in it"):
        client_verify(_settings(tmp_path, api_ca_file=garbage), url)


def test_an_untrusted_certificate_is_named_among_wrapped_errors() -> None:
    bad = ssl.SSLCertVerificationError(1, "certificate verify failed")
    bad.verify_message = "unable to get local issuer certificate"
    try:
        try:
            raise bad
        except ssl.SSLError as exc:
            raise OSError("connect failed") from exc
    except OSError as outer:
        line = untrusted_message("https://10.231.0.1:8443", outer)
    assert line is not None and "\n" not in line
    assert "the API at https://10.231.0.1:8443" in line
    assert "unable to get local issuer certificate" in line and "api_ca_file" in line
    assert untrusted_message("https://x", OSError("connection refused")) is None
