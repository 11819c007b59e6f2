"""TLS of the API: the server's certificate and key, checked before uvicorn starts, and
what its clients (the CLI, runners) trust: ``api_ca_file``, else the system's CA store.

A certificate the client does not trust is a setting to fix, said in one line that names
the API's URL and ``api_ca_file``, never a traceback."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from ci_pool.exceptions import ConfigError
from ci_pool.settings import Settings

_FIX_CA = "api_ca_file (CI_POOL_API_CA_FILE)"


def server_files(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """The certificate and key to serve with, once they load as a matching PEM pair;
    None when neither is given (plain http)."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            "TLS needs a certificate and its key: give both --tls-cert and --tls-key "
            "(api_tls_cert and api_tls_key), or neither",
            key="api_tls_cert" if cert is None else "api_tls_key",
        )
    pair = ((cert, "api_tls_cert", "--tls-cert"), (key, "api_tls_key", "--tls-key"))
    for path, name, flag in pair:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path} ({exc.strerror or exc}); point {name} ({flag}) at a "
                "readable PEM file",
                key=name,
            ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{cert} and {key} are not a PEM certificate and its private key "
            f"({exc.reason or exc}); check api_tls_cert and api_tls_key (--tls-cert, --tls-key)",
            key="api_tls_cert",
        ) from None
    return cert, key


def client_verify(settings: Settings, url: str) -> ssl.SSLContext | bool:
    """What an https ``url`` is checked against: ``api_ca_file``, else the system's CA
    store. Plain http (loopback only, see ``addresses.check_api_url``) needs nothing."""
    if urlsplit(url).scheme != "https":
        return True
    ca = settings.api_ca_file
    try:
        return ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    except ssl.SSLError as exc:  # an OSError too: first
        why = f"no PEM certificate in it: {exc.reason or exc}"
    except OSError as exc:
        why = exc.strerror or str(exc)
    raise ConfigError(
        f"cannot load the CA bundle {ca} ({why}); point {_FIX_CA} at the PEM file of the CA "
        "that signed the API's certificate",
        key="api_ca_file",
    )


def certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed under ``exc`` (httpx wraps it twice), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def untrusted_message(url: str, exc: BaseException) -> str | None:
    """One line on a certificate of the API at ``url`` this client does not trust, or
    None when ``exc`` is about something else."""
    bad = certificate_problem(exc)
    if bad is None:
        return None
    why = bad.verify_message or bad.reason or str(bad)
    hint = f"set {_FIX_CA} to the CA bundle that signed it"
    if "mismatch" in why.lower():
        hint = f"use the host name the certificate names in the URL, or {hint}"
    return f"the API at {url} presents a certificate this machine does not trust ({why}); {hint}"
