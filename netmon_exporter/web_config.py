"""TLS and basic auth from a web config file in the Prometheus exporter-toolkit format.

The same file works with ``promtool check web-config``::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: ca.crt                          # optional
      min_version: TLS12                              # optional
    basic_auth_users:
      alice: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')
    http_server_config:
      headers:
        X-Frame-Options: deny
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class WebConfigError(Exception):
    """The web config file is invalid."""


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _cache: dict[tuple[str, str], bool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check_auth(self, username: str, password: str) -> bool:
        """Verify basic-auth credentials (bcrypt), caching results as exporter-toolkit does."""
        if not self.users:
            return True
        import bcrypt

        key = (username, password)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        hashed = self.users.get(username)
        # Compare against a dummy hash for unknown users so timing does not reveal them.
        target = hashed or b"$2b$10$" + b"." * 53
        try:
            ok = bcrypt.checkpw(password.encode(), target) and hashed is not None
        except ValueError:
            ok = False
        with self._lock:
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[key] = ok
        return ok


def load_web_config(path: str | None) -> WebConfig:
    """Read the web config file; ``None`` or empty means plain HTTP without auth."""
    if not path:
        return WebConfig()
    p = Path(path)
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise WebConfigError(f"--web.config.file: cannot read {p}: {exc}") from None
    if not isinstance(data, dict):
        raise WebConfigError(f"--web.config.file: {p} must be a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise WebConfigError(f"--web.config.file: unknown keys {sorted(unknown)}")
    cfg = WebConfig()
    tls = data.get("tls_server_config")
    if tls:
        cfg.ssl_context = _ssl_context(tls, p.parent)
    for user, hashed in (data.get("basic_auth_users") or {}).items():
        if not isinstance(hashed, str) or not hashed.startswith("$2"):
            raise WebConfigError(
                f"--web.config.file: basic_auth_users.{user}: must be a bcrypt hash"
            )
        cfg.users[str(user)] = hashed.replace("$2y$", "$2b$", 1).encode()
    headers = (data.get("http_server_config") or {}).get("headers") or {}
    cfg.headers = {str(k): str(v) for k, v in headers.items()}
    return cfg


def _ssl_context(tls: dict[str, Any], base: Path) -> ssl.SSLContext:
    def rel(v: str) -> str:
        q = Path(v)
        return str(q if q.is_absolute() else base / q)

    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        raise WebConfigError("--web.config.file: tls_server_config needs cert_file and key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS.get(
        str(tls.get("min_version", "TLS12")), ssl.TLSVersion.TLSv1_2
    )
    try:
        ctx.load_cert_chain(rel(cert), rel(key))
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"--web.config.file: tls_server_config: cannot load certificate: {exc}"
        ) from None
    auth = str(tls.get("client_auth_type", "NoClientCert"))
    if auth not in _CLIENT_AUTH:
        raise WebConfigError(
            f"--web.config.file: tls_server_config.client_auth_type: {auth!r} is not valid"
        )
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if tls.get("client_ca_file"):
        ctx.load_verify_locations(rel(tls["client_ca_file"]))
    return ctx
