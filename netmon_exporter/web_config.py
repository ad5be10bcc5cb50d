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

Passwords are checked with bcrypt, which is slow on purpose. As in exporter-toolkit, a
right password is cached (keyed by user, stored hash and a digest of the password), so
a scraper pays once; wrong passwords are never cached and go through
:class:`AuthThrottle`, so a flood of fresh ones is refused before it costs CPU.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, read_yaml_file

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


class AuthThrottle:
    """Decide whether a password may be checked with bcrypt now; time is passed in.

    bcrypt is slow on purpose (about 50 ms of CPU at cost 10), so every fresh wrong
    password is CPU an unauthenticated caller makes us spend. Each check takes a token
    from the caller's bucket and from a global one; a right password gives them back.
    A caller with an empty bucket gets 401 at once, without bcrypt, so a flood of wrong
    passwords costs at most ``global_burst + global_rate * seconds`` verifications.
    """

    def __init__(
        self,
        client_burst: float = 5.0,
        client_rate: float = 0.5,
        global_burst: float = 20.0,
        global_rate: float = 2.0,
        max_clients: int = 4096,
    ) -> None:
        self.client_burst, self.client_rate = client_burst, client_rate
        self.global_burst, self.global_rate = global_burst, global_rate
        self.max_clients = max_clients
        self._global = (global_burst, 0.0)
        self._clients: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @staticmethod
    def _refill(bucket: tuple[float, float] | None, burst: float, rate: float, now: float) -> float:
        if bucket is None:
            return burst
        tokens, stamp = bucket
        return min(burst, tokens + max(0.0, now - stamp) * rate)

    def take(self, client: str, now: float) -> bool:
        """Take a token for one bcrypt check by ``client``; False means refuse without checking."""
        g = self._refill(self._global, self.global_burst, self.global_rate, now)
        c = self._refill(self._clients.get(client), self.client_burst, self.client_rate, now)
        if g < 1.0 or c < 1.0:
            return False
        self._global = (g - 1.0, now)
        self._clients[client] = (c - 1.0, now)
        self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return True

    def give_back(self, client: str, now: float) -> None:
        """Return the token of a check that found the right password."""
        g = self._refill(self._global, self.global_burst, self.global_rate, now)
        self._global = (min(self.global_burst, g + 1.0), now)
        if client in self._clients:
            c = self._refill(self._clients[client], self.client_burst, self.client_rate, now)
            self._clients[client] = (min(self.client_burst, c + 1.0), now)


_CACHE_SIZE = 256
# Compared against for unknown users so that timing does not reveal which users exist.
_DUMMY_HASH = b"$2b$10$" + b"." * 53


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    throttle: AuthThrottle = field(default_factory=AuthThrottle, repr=False)
    _cache: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _key(self, username: str, password: str) -> bytes:
        # As exporter-toolkit: the user, the stored hash and a digest of the password,
        # so a wrong password never matches the entry of a right one, a changed hash
        # invalidates the entry, and no password is kept in the clear.
        h = hashlib.sha256()
        for part in (username.encode(), self.users.get(username, b""), password.encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.digest()

    def precheck(self, username: str, password: str, client: str) -> bool | None:
        """Answer without bcrypt when possible: True (cached), False (refused), None (verify).

        None means a throttle token was taken: call :meth:`verify` next.
        """
        if not self.users:
            return True
        key = self._key(username, password)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
            if not self.throttle.take(client, time.monotonic()):
                return False
        return None

    def verify(self, username: str, password: str, client: str) -> bool:
        """Check the password with bcrypt (slow; after :meth:`precheck` returned None)."""
        import bcrypt

        hashed = self.users.get(username)
        try:
            ok = bcrypt.checkpw(password.encode(), hashed or _DUMMY_HASH) and hashed is not None
        except ValueError:
            ok = False
        if ok:
            # Only right passwords are cached: fresh wrong ones cannot evict them.
            with self._lock:
                self._cache[self._key(username, password)] = None
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
                self.throttle.give_back(client, time.monotonic())
        return ok

    def check_auth(self, username: str, password: str, client: str = "") -> bool:
        """Verify basic-auth credentials: cached, throttled, then bcrypt."""
        verdict = self.precheck(username, password, client)
        return verdict if verdict is not None else self.verify(username, password, client)


def load_web_config(path: str | None) -> WebConfig:
    """Read the web config file; ``None`` or empty means plain HTTP without auth."""
    if not path:
        return WebConfig()
    p = Path(path)
    try:
        data: Any = read_yaml_file(p) or {}
    except ConfigError as exc:
        raise WebConfigError(f"--web.config.file: {'; '.join(exc.errors)}") from None
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
