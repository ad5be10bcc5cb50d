"""TLS and basic auth from a web config file in the Prometheus exporter-toolkit format.

The file means what it means to exporter-toolkit (``web/tls_config.go`` and
``web/handler.go``), so ``promtool check web-config`` and the daemon agree on it::

    tls_server_config:
      cert_file: server.crt          # or cert: inline PEM
      key_file: server.key           # or key: inline PEM
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt         # or client_ca: inline PEM
      client_allowed_sans: [scraper.example.com]
      min_version: TLS12             # TLS10 .. TLS13
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go's names
      curve_preferences: [X25519, CurveP256]
      prefer_server_cipher_suites: true
    http_server_config:
      http2: true
      headers:
        X-Frame-Options: deny
    basic_auth_users:
      alice: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

As in Go's ``yaml.UnmarshalStrict``, unknown keys and values of the wrong type are
errors; enumerations (TLS versions, client auth types, cipher suites, curves) take
exactly exporter-toolkit's names; only the headers exporter-toolkit allows may be set,
some only to fixed values; a password hash must pass Go's ``bcrypt.Cost``. Every
problem is reported at once. ``http2`` is accepted and has no effect: the server speaks
HTTP/1.1 only, as exporter-toolkit does with ``http2: false``. ``rate_limit`` (newer
exporter-toolkit) is not supported and refused as an unknown key, so nobody believes
it applies. The file is read within the bounds of ``config.yaml``
(size, no aliases, no duplicate keys), which is stricter than Go on one point: YAML
anchors and aliases are refused.

exporter-toolkit re-reads the file on every request and the certificate on every
handshake. :class:`LiveWebConfig` does the same at most once a second, and only
when one of the files changed (stat), so a rotated certificate is served without a
restart; while the file is invalid, requests get 500 as they do from exporter-toolkit.

Python's ``ssl`` module lacks three things exporter-toolkit does: several curve
preferences, a client certificate requested or required *without* verification
(``RequestClientCert``, ``RequireAnyClientCert``) and a check of the client's SANs
in the handshake. :class:`_LibSSL` calls the two OpenSSL functions for them on the
libssl that ``ssl`` itself uses; where that is impossible, a file needing them is
refused with a clear reason, never silently weakened.

Passwords are checked with bcrypt, which is slow on purpose. As in exporter-toolkit, a
right password is cached (keyed by user, stored hash and a digest of the password), so
a scraper pays once; wrong passwords are never cached and go through
:class:`AuthThrottle`, so a flood of fresh ones is refused before it costs CPU.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import stat
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, read_yaml_file

log = logging.getLogger(__name__)

FLAG = "--web.config.file"

# exporter-toolkit's names, in the order its docs list them ------------------------------

#: client_auth_type -> (verify mode, client certificate verified against the CAs)
CLIENT_AUTH_TYPES: dict[str, tuple[str, bool]] = {
    "": ("none", False),
    "NoClientCert": ("none", False),
    "RequestClientCert": ("request", False),
    "RequireAnyClientCert": ("require", False),
    "RequireClientCert": ("require", False),  # kept by exporter-toolkit for compatibility
    "VerifyClientCertIfGiven": ("request", True),
    "RequireAndVerifyClientCert": ("require", True),
}
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS13": ssl.TLSVersion.TLSv1_3,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS10": ssl.TLSVersion.TLSv1,
}
#: Go's ``tls.CipherSuites()`` (the ones exporter-toolkit accepts) -> OpenSSL's name;
#: None for TLS 1.3 suites, which neither Go nor OpenSSL lets a server restrict here.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
#: exporter-toolkit's curve names -> OpenSSL's group names
CURVES: dict[str, str] = {
    "CurveP256": "P-256",
    "CurveP384": "P-384",
    "CurveP521": "P-521",
    "X25519": "X25519",
}
#: The response headers exporter-toolkit lets a web config set (names exactly as
#: written); a tuple restricts the value, None allows any.
EXTRA_HTTP_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_TLS_KEYS = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "cipher_suites",
    "curve_preferences",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
    "client_allowed_sans",
)
_HTTP_KEYS = ("http2", "headers")
_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")


class WebConfigError(Exception):
    """The web config file is invalid (the message says what, where and what to do)."""

    def __init__(self, message: str, files: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.files = files  # the files it names, so a watcher knows what to stat


# ---------------------------------------------------------------- decoding (no I/O)


@dataclass(frozen=True)
class TLSSettings:
    """``tls_server_config`` as exporter-toolkit reads it, relative paths already joined."""

    cert_file: str = ""
    key_file: str = ""
    cert: str = ""
    key: str = field(default="", repr=False)
    client_auth_type: str = ""
    client_ca_file: str = ""
    client_ca: str = ""
    cipher_suites: tuple[str, ...] = ()
    curve_preferences: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True
    client_allowed_sans: tuple[str, ...] | None = None

    @property
    def enabled(self) -> bool:
        """Whether the file asks for TLS at all (as exporter-toolkit's ``IsEnabled``)."""
        return any(
            (
                self.cert_file,
                self.cert,
                self.key_file,
                self.key,
                self.client_ca_file,
                self.client_ca,
                self.client_auth_type,
            )
        )

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)


@dataclass(frozen=True)
class WebSettings:
    tls: TLSSettings = field(default_factory=TLSSettings)
    http2: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    users: tuple[tuple[str, str], ...] = field(default=(), repr=False)


# Go's yaml.v2 reads these plain scalars as booleans; PyYAML reads the longer ones only.
_GO_BOOLS = {"y": True, "Y": True, "n": False, "N": False}


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return f"{value!r}"


def _as_string(value: Any, where: str, errors: list[str]) -> str:
    """Decode a scalar into a string as yaml.v2 does (any scalar; null is empty)."""
    if value is None:
        return ""
    if isinstance(value, Mapping | list):
        errors.append(f"{where}: must be a string, not {_type_name(value)}")
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_bool(value: Any, where: str, errors: list[str], default: bool) -> bool:
    if value is None:
        return False  # yaml.v2 sets the zero value for an explicit null
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _GO_BOOLS:
        return _GO_BOOLS[value]
    errors.append(f"{where}: must be true or false, not {_type_name(value)}")
    return default


def _as_list(value: Any, where: str, errors: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(f"{where}: must be a list, not {_type_name(value)}")
        return []
    return value


def _as_mapping(value: Any, where: str, errors: list[str]) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.append(f"{where}: must be a mapping, not {_type_name(value)}")
        return {}
    return value


def _unknown_keys(data: Mapping[Any, Any], known: tuple[str, ...], where: str) -> list[str]:
    out = []
    for key in data:
        if isinstance(key, str) and key in known:
            continue
        hint = difflib.get_close_matches(str(key), known, n=1)
        also = f" (did you mean {hint[0]}?)" if hint else ""
        valid = ", ".join(known)
        out.append(f"{where}{key}: unknown key{also}; valid keys: {valid}")
    return out


def _enum(value: Any, where: str, names: Mapping[str, Any], what: str, errors: list[str]) -> str:
    if isinstance(value, Mapping | list):
        return _as_string(value, where, errors)
    text = _as_string(value, where, errors)
    if text not in names:
        hint = difflib.get_close_matches(text, list(names), n=1)
        also = f" (did you mean {hint[0]}?)" if hint else ""
        errors.append(f"{where}: unknown {what} {text!r}{also}; one of: {', '.join(names)}")
    return text


def bcrypt_cost_error(hashed: str) -> str | None:
    """Say why Go's ``bcrypt.Cost`` would refuse ``hashed`` (as exporter-toolkit checks), or None."""
    b = hashed.encode()
    if len(b) < 59:
        return "is too short to be a bcrypt hash"
    if b[0:1] != b"$":
        return f"must start with '$' (a bcrypt hash), not {chr(b[0])!r}"
    if b[1] > ord("2"):
        return f"asks for bcrypt version {chr(b[1])!r}, newer than 2"
    n = 3 if b[2:3] == b"$" else 4
    cost_text = b[n : n + 2].decode(errors="replace")
    if not re.fullmatch(r"[+-]?\d+", cost_text):
        return f"has no valid cost ({cost_text!r} is not a number)"
    cost = int(cost_text)
    if not 4 <= cost <= 31:
        return f"has cost {cost}, outside the allowed range 4 to 31"
    return None


def _join_dir(base: Path, value: str) -> str:
    if not value or os.path.isabs(value):
        return value
    return str(base / value)


def decode_web_settings(data: Any, base: Path) -> tuple[WebSettings, list[str]]:
    """Decode parsed YAML into :class:`WebSettings` and every error, as exporter-toolkit would."""
    errors: list[str] = []
    if data is None:
        return WebSettings(), errors
    if not isinstance(data, Mapping):
        return WebSettings(), [f"<root>: must be a mapping, not {_type_name(data)}"]
    errors += _unknown_keys(data, _TOP_KEYS, "")
    tls = _decode_tls(data.get("tls_server_config"), base, errors)
    http = _as_mapping(data.get("http_server_config"), "http_server_config", errors)
    errors += _unknown_keys(http, _HTTP_KEYS, "http_server_config.")
    http2 = True
    if "http2" in http:
        http2 = _as_bool(http["http2"], "http_server_config.http2", errors, True)
    headers = _decode_headers(http.get("headers"), errors)
    users: list[tuple[str, str]] = []
    for user, hashed in _as_mapping(
        data.get("basic_auth_users"), "basic_auth_users", errors
    ).items():
        where = f"basic_auth_users.{user}"
        text = _as_string(hashed, where, errors)
        problem = None if isinstance(hashed, Mapping | list) else bcrypt_cost_error(text)
        if problem:
            errors.append(
                f"{where}: the password hash {problem}; write a bcrypt hash "
                "(htpasswd -nBC 10 \"\" | tr -d ':\\n')"
            )
        users.append((_as_string(user, where, errors), text))
    return WebSettings(tls, http2, tuple(headers), tuple(users)), errors


def _decode_headers(value: Any, errors: list[str]) -> list[tuple[str, str]]:
    out = []
    for name, raw in _as_mapping(value, "http_server_config.headers", errors).items():
        where = f"http_server_config.headers.{name}"
        text = _as_string(raw, where, errors)
        key = _as_string(name, where, errors)
        if key not in EXTRA_HTTP_HEADERS:
            errors.append(
                f"{where}: this header can not be configured; only "
                + ", ".join(EXTRA_HTTP_HEADERS)
                + " (spelt exactly so)"
            )
            continue
        allowed = EXTRA_HTTP_HEADERS[key]
        if allowed is not None and text not in allowed:
            errors.append(f"{where}: {text!r} is not allowed; one of: {', '.join(allowed)}")
            continue
        # As Go's net/http writes a header: line breaks become spaces.
        out.append((key, text.replace("\r", " ").replace("\n", " ")))
    return out


def _decode_tls(value: Any, base: Path, errors: list[str]) -> TLSSettings:
    tls = _as_mapping(value, "tls_server_config", errors)
    errors += _unknown_keys(tls, _TLS_KEYS, "tls_server_config.")

    def text(key: str) -> str:
        return _as_string(tls.get(key), f"tls_server_config.{key}", errors)

    def names(key: str, table: Mapping[str, Any], what: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(_as_list(tls.get(key), f"tls_server_config.{key}", errors)):
            if item is None:  # yaml.v2 leaves a null item at its zero value: no suite
                continue
            out.append(_enum(item, f"tls_server_config.{key}[{i}]", table, what, errors))
        return tuple(out)

    def version(key: str, default: str) -> str:
        if tls.get(key) is None:
            return default
        return _enum(tls[key], f"tls_server_config.{key}", TLS_VERSIONS, "TLS version", errors)

    sans: tuple[str, ...] | None = None
    if tls.get("client_allowed_sans") is not None:
        where = "tls_server_config.client_allowed_sans"
        sans = tuple(
            _as_string(s, f"{where}[{i}]", errors)
            for i, s in enumerate(_as_list(tls["client_allowed_sans"], where, errors))
        )
    auth = text("client_auth_type")
    if auth not in CLIENT_AUTH_TYPES:
        known = [k for k in CLIENT_AUTH_TYPES if k]
        hint = difflib.get_close_matches(auth, known, n=1)
        also = f" (did you mean {hint[0]}?)" if hint else ""
        errors.append(
            f"tls_server_config.client_auth_type: unknown client auth type {auth!r}{also}; "
            f"one of: {', '.join(known)}"
        )
    prefer = True
    if "prefer_server_cipher_suites" in tls:
        prefer = _as_bool(
            tls["prefer_server_cipher_suites"],
            "tls_server_config.prefer_server_cipher_suites",
            errors,
            True,
        )
    return TLSSettings(
        cert_file=_join_dir(base, text("cert_file")),
        key_file=_join_dir(base, text("key_file")),
        cert=text("cert"),
        key=text("key"),
        client_auth_type=auth,
        client_ca_file=_join_dir(base, text("client_ca_file")),
        client_ca=text("client_ca"),
        cipher_suites=names("cipher_suites", CIPHER_SUITES, "cipher suite"),
        curve_preferences=names("curve_preferences", CURVES, "curve"),
        min_version=version("min_version", "TLS12"),
        max_version=version("max_version", "TLS13"),
        prefer_server_cipher_suites=prefer,
        client_allowed_sans=sans,
    )


def tls_policy_errors(tls: TLSSettings) -> list[str]:
    """Return what exporter-toolkit's ``ConfigToTLSConfig`` refuses before reading any file."""
    if not tls.enabled:
        return []
    errors = []
    if not tls.cert_file and not tls.cert:
        errors.append("tls_server_config: missing one of cert or cert_file")
    if not tls.key_file and not tls.key:
        errors.append("tls_server_config: missing one of key or key_file")
    mode, _ = CLIENT_AUTH_TYPES.get(tls.client_auth_type, ("none", False))
    if (tls.client_ca_file or tls.client_ca) and mode == "none":
        errors.append(
            "tls_server_config: client CAs are configured but client_auth_type does not ask "
            "for a client certificate; set client_auth_type (e.g. RequireAndVerifyClientCert)"
        )
    if tls.client_allowed_sans is not None and mode != "require":
        errors.append(
            "tls_server_config.client_allowed_sans: needs client_auth_type "
            "RequireAnyClientCert or RequireAndVerifyClientCert"
        )
    return errors


# ---------------------------------------------------------------- client certificate SANs


def _der(buf: bytes, pos: int) -> tuple[int, int, int]:
    """Read one DER header at ``pos``: (tag, content start, content end)."""
    tag, length = buf[pos], buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    if pos + length > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


_SAN_OID = b"\x55\x1d\x11"  # 2.5.29.17


def subject_alt_names(der: bytes) -> list[str]:
    """List a certificate's SAN values as Go prints them: DNS names, emails, IPs, URIs."""
    _, start, end = _der(der, 0)  # Certificate
    _, pos, end = _der(der, start)  # tbsCertificate
    while pos < end:
        tag, cstart, cend = _der(der, pos)
        pos = cend
        if tag != 0xA3:  # [3] extensions
            continue
        _, p, xend = _der(der, cstart)
        while p < xend:
            _, estart, eend = _der(der, p)
            p = eend
            _, ostart, oend = _der(der, estart)
            tag, vstart, vend = _der(der, oend)
            if tag == 0x01:  # critical flag
                tag, vstart, vend = _der(der, vend)
            if der[ostart:oend] == _SAN_OID and tag == 0x04:
                return _general_names(der[vstart:vend])
    return []


def _general_names(buf: bytes) -> list[str]:
    dns, email, ips, uris = [], [], [], []
    _, pos, end = _der(buf, 0)
    while pos < end:
        tag, start, stop = _der(buf, pos)
        pos = stop
        raw = buf[start:stop]
        if tag == 0x82:
            dns.append(raw.decode("ascii", "replace"))
        elif tag == 0x81:
            email.append(raw.decode("ascii", "replace"))
        elif tag == 0x87 and len(raw) in (4, 16):
            ip = ipaddress.ip_address(raw)
            mapped = getattr(ip, "ipv4_mapped", None)
            ips.append(str(mapped or ip))
        elif tag == 0x86:
            uris.append(raw.decode("ascii", "replace"))
    return dns + email + ips + uris


# ---------------------------------------------------------------- OpenSSL beyond ssl's API


class _LibSSL:
    """The OpenSSL calls Python's ``ssl`` lacks, on the very libssl ``_ssl`` is linked to.

    The ``SSL_CTX`` pointer is read from the ``SSLContext`` object (the first field after
    the object header in CPython 3.8 to 3.13) and checked against what ``ssl`` reports for
    the same context before anything is written through it.
    """

    CTRL_SET_GROUPS_LIST = 92
    VERIFY_PEER, VERIFY_FAIL_IF_NO_PEER_CERT = 1, 2

    def __init__(self) -> None:
        import _ssl
        import ctypes

        if sys.implementation.name != "cpython" or not (3, 8) <= sys.version_info[:2] <= (3, 13):
            raise OSError(f"not a CPython whose ssl objects this knows ({sys.version})")
        lib = ctypes.CDLL(_ssl.__file__)
        vp, ci = ctypes.c_void_p, ctypes.c_int
        self.ctypes = ctypes
        self.callback_type = ctypes.CFUNCTYPE(ci, ci, vp)
        self._ctrl = lib.SSL_CTX_ctrl
        self._ctrl.argtypes, self._ctrl.restype = [vp, ci, ctypes.c_long, vp], ctypes.c_long
        self._set_verify = lib.SSL_CTX_set_verify
        self._set_verify.argtypes, self._set_verify.restype = [vp, ci, self.callback_type], None
        self._get_options = lib.SSL_CTX_get_options
        self._get_options.argtypes, self._get_options.restype = [vp], ctypes.c_uint64
        self._get_verify_mode = lib.SSL_CTX_get_verify_mode
        self._get_verify_mode.argtypes, self._get_verify_mode.restype = [vp], ci
        self._current_cert = lib.X509_STORE_CTX_get_current_cert
        self._current_cert.argtypes, self._current_cert.restype = [vp], vp
        self._depth = lib.X509_STORE_CTX_get_error_depth
        self._depth.argtypes, self._depth.restype = [vp], ci
        self._i2d = lib.i2d_X509
        self._i2d.argtypes, self._i2d.restype = [vp, vp], ci

    def _pointer(self, ctx: ssl.SSLContext) -> int:
        ptr = self.ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ptr or int(self._get_options(ptr)) != int(ctx.options):
            raise OSError("cannot find the OpenSSL context behind ssl.SSLContext")
        # OpenSSL's mode bits (PEER=1, FAIL_IF_NO_PEER_CERT=2) as ssl reports them.
        if {0: 0, 1: 1, 3: 2}.get(self._get_verify_mode(ptr)) != int(ctx.verify_mode):
            raise OSError("cannot find the OpenSSL context behind ssl.SSLContext")
        return ptr

    def set_groups(self, ctx: ssl.SSLContext, groups: list[str]) -> None:
        arg = ":".join(groups).encode()
        if self._ctrl(self._pointer(ctx), self.CTRL_SET_GROUPS_LIST, 0, arg) != 1:
            raise OSError(f"OpenSSL refused the curve list {':'.join(groups)}")

    def set_verify(
        self, ctx: ssl.SSLContext, require: bool, verified: bool, sans: tuple[str, ...] | None
    ) -> None:
        """Ask for a client certificate; accept it unverified unless ``verified``; check SANs."""
        ptr = self._pointer(ctx)
        allowed = frozenset(sans) if sans is not None else None

        def check(preverify_ok: int, store: int | None) -> int:
            try:
                if not preverify_ok and verified:
                    return 0
                if allowed is None or self._depth(store) != 0:
                    return 1
                return 1 if allowed.intersection(subject_alt_names(self._leaf(store))) else 0
            except Exception:  # never let an exception cross into OpenSSL
                log.debug("client certificate check failed", exc_info=True)
                return 0

        callback = self.callback_type(check)
        mode = self.VERIFY_PEER | (self.VERIFY_FAIL_IF_NO_PEER_CERT if require else 0)
        self._set_verify(ptr, mode, callback)
        ctx.__dict__["_netmon_verify_callback"] = callback  # lives as long as the context

    def _leaf(self, store: int | None) -> bytes:
        cert = self._current_cert(store)
        size = self._i2d(cert, None)
        if size <= 0:
            raise ValueError("cannot encode the client certificate")
        buf = self.ctypes.create_string_buffer(size)
        cursor = self.ctypes.c_char_p(self.ctypes.addressof(buf))
        self._i2d(cert, self.ctypes.addressof(cursor))
        return buf.raw


_libssl: _LibSSL | None = None
_libssl_error = ""


def _openssl() -> _LibSSL:
    global _libssl, _libssl_error
    if _libssl is None and not _libssl_error:
        try:
            _libssl = _LibSSL()
        except (OSError, AttributeError) as exc:
            _libssl_error = str(exc) or type(exc).__name__
    if _libssl is None:
        raise OSError(_libssl_error)
    return _libssl


# ---------------------------------------------------------------- building the TLS context


def _pem_certificates(text: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)


MAX_PEM_BYTES = 4 * 1024 * 1024  # a CA bundle is ~200 KiB; a certificate chain a few


def _read(path: str, key: str) -> bytes:
    """Read a certificate, key or CA file: a regular file of at most :data:`MAX_PEM_BYTES`."""
    where = f"tls_server_config.{key}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise WebConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WebConfigError(f"{where}: {path} is not a regular file")
        data = b""
        while len(data) <= MAX_PEM_BYTES:
            chunk = os.read(fd, MAX_PEM_BYTES + 1 - len(data))
            if not chunk:
                return data
            data += chunk
        raise WebConfigError(f"{where}: {path} is larger than {MAX_PEM_BYTES // 2**20} MiB")
    except OSError as exc:
        raise WebConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a certificate and key from memory (Python's ssl reads only files)."""
    fds = []
    try:
        for data in (cert, key):
            fd = os.memfd_create("netmon-web-config", 0)
            fds.append(fd)
            os.write(fd, data)
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)


def build_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """Build the server's TLS context; raise :class:`WebConfigError` with every reason."""
    cert = _read(tls.cert_file, "cert_file") if tls.cert_file else tls.cert.encode()
    key = _read(tls.key_file, "key_file") if tls.key_file else tls.key.encode()
    cert_key, key_key = (
        ("cert_file" if tls.cert_file else "cert"),
        ("key_file" if tls.key_file else "key"),
    )
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise WebConfigError(f"tls_server_config.{cert_key}: no PEM certificate found")
    if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", key):
        found = " (it holds a certificate)" if b"-----BEGIN CERTIFICATE-----" in key else ""
        raise WebConfigError(f"tls_server_config.{key_key}: no PEM private key found{found}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        _load_cert_chain(ctx, cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        if reason in ("KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            reason = "the private key does not belong to the certificate"
        raise WebConfigError(
            f"tls_server_config: cannot load {cert_key} and {key_key}: {reason}"
        ) from None
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated; the file asked for them
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = TLS_VERSIONS[tls.min_version]
        ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.min_version in ("TLS10", "TLS11"):
        # OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 signatures) at its default security level.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    _apply_ciphers(ctx, tls)
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.curve_preferences:
        groups = [CURVES[c] for c in tls.curve_preferences]
        try:
            _openssl().set_groups(ctx, groups)
        except OSError as exc:
            if len(groups) > 1:
                raise WebConfigError(
                    "tls_server_config.curve_preferences: this Python cannot set more than one "
                    f"curve ({exc}); list one"
                ) from None
            ctx.set_ecdh_curve(groups[0].replace("P-256", "prime256v1"))
    _apply_client_auth(ctx, tls)
    return ctx


def _apply_ciphers(ctx: ssl.SSLContext, tls: TLSSettings) -> None:
    if not tls.cipher_suites:
        return
    names = [n for c in tls.cipher_suites if (n := CIPHER_SUITES[c])]
    if not names:
        # Only TLS 1.3 suites listed: like Go, nothing is left for TLS 1.2 and below.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return
    level = ":@SECLEVEL=0" if tls.min_version in ("TLS10", "TLS11") else ""
    ctx.set_ciphers(":".join(dict.fromkeys(names)) + level)


def _apply_client_auth(ctx: ssl.SSLContext, tls: TLSSettings) -> None:
    mode, verified = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if mode == "none":
        return
    if verified:
        if tls.client_ca_file or tls.client_ca:
            text = (
                _read(tls.client_ca_file, "client_ca_file").decode("utf-8", "replace")
                if tls.client_ca_file
                else tls.client_ca
            )
            # As Go's AppendCertsFromPEM: blocks that do not parse are skipped.
            for pem in _pem_certificates(text):
                try:
                    ctx.load_verify_locations(cadata=pem)
                except ssl.SSLError:
                    log.warning("a client CA certificate cannot be parsed; skipped")
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # Go: the system roots
        ctx.verify_mode = ssl.CERT_REQUIRED if mode == "require" else ssl.CERT_OPTIONAL
        if tls.client_allowed_sans is None:
            return
    try:
        _openssl().set_verify(ctx, mode == "require", verified, tls.client_allowed_sans)
    except OSError as exc:
        what = (
            "client_allowed_sans"
            if verified
            else f"client_auth_type: {tls.client_auth_type} (a certificate taken unverified)"
        )
        raise WebConfigError(
            f"tls_server_config.{what} cannot be applied by this Python's ssl module ({exc}); "
            "use RequireAndVerifyClientCert without client_allowed_sans"
        ) from None


# ---------------------------------------------------------------- basic auth (runtime)


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


def _checkable(hashed: str) -> bytes:
    """Rewrite a hash Go's bcrypt accepts ($2$, $2a$, $2x$, $2y$...) as the $2b$ Python checks."""
    b = hashed.encode()
    n = 3 if b[2:3] == b"$" else 4
    return b"$2b$" + b[n:]


@dataclass
class WebConfig:
    """The web config in force: TLS context, users, headers, and the bcrypt cache/throttle."""

    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    http2: bool = True
    files: tuple[str, ...] = ()  # every file it was read from (config, cert, key, CA)
    throttle: AuthThrottle = field(default_factory=AuthThrottle, repr=False)
    _cache: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def current(self) -> WebConfig:
        """Return itself: a fixed web config (see :class:`LiveWebConfig` for a watched one)."""
        return self

    def share_auth_state(self, other: WebConfig) -> None:
        """Take over ``other``'s password cache and throttle (a reload keeps both)."""
        self.throttle, self._cache, self._lock = other.throttle, other._cache, other._lock

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


# ---------------------------------------------------------------- loading


def load_web_config(path: str | None) -> WebConfig:
    """Read the web config file; ``None`` or empty means plain HTTP without auth.

    Raise :class:`WebConfigError` naming the flag, the file and every problem, for
    exactly the files exporter-toolkit (``promtool check web-config``) refuses.
    """
    if not path:
        return WebConfig()
    p = Path(path)
    try:
        data: Any = read_yaml_file(p)
    except ConfigError as exc:
        raise WebConfigError(_message(p, exc.errors), (str(p),)) from None
    settings, errors = decode_web_settings(data, p.parent)
    files = (str(p), *settings.tls.files)
    errors += tls_policy_errors(settings.tls)
    if errors:
        raise WebConfigError(_message(p, errors), files)
    ctx = None
    if settings.tls.enabled:
        try:
            ctx = build_ssl_context(settings.tls)
        except WebConfigError as exc:
            raise WebConfigError(_message(p, [str(exc)]), files) from None
        if TLS_VERSIONS[settings.tls.min_version] > TLS_VERSIONS[settings.tls.max_version]:
            log.warning(
                "web config: min_version is above max_version; no TLS client can connect",
                extra={"file": str(p)},
            )
    return WebConfig(
        ssl_context=ctx,
        users={user: _checkable(hashed) for user, hashed in settings.users},
        headers=dict(settings.headers),
        http2=settings.http2,
        files=files,
    )


def _message(path: Path, errors: list[str]) -> str:
    if len(errors) == 1:
        return f"{FLAG}: {path}: {errors[0]}"
    return f"{FLAG}: {path}: " + "; ".join(errors)


# ---------------------------------------------------------------- watching for changes


def _stamp(paths: tuple[str, ...]) -> tuple[tuple[int, int, int, int] | None, ...]:
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class LiveWebConfig:
    """The web config file as exporter-toolkit uses it: re-read whenever it or its files change.

    :meth:`current` stats the file and the certificate, key and CA files it names at most
    once per ``interval`` and re-reads them when one changed, so a rotated certificate is
    served from the next connection on. While the file is invalid, :meth:`current` raises
    (requests get 500, as from exporter-toolkit) and new connections get the last good
    TLS context; the error is logged once per change. Switching TLS on or off needs a
    restart (the listening socket is plain or TLS for its life).
    """

    def __init__(
        self,
        path: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.interval = interval
        self._clock = clock
        self._web = load_web_config(path)  # a bad file at start-up is refused by the caller
        self._files = self._web.files
        self._stamp = _stamp(self._files)
        self._next = clock() + interval
        self._error: str | None = None
        self._lock = threading.Lock()
        self.reloads = 0

    @property
    def error(self) -> str | None:
        """Why the file on disk is refused now (None while it is valid)."""
        return self._error

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for a new connection: the newest good one."""
        self._refresh()
        return self._web.ssl_context

    def current(self) -> WebConfig:
        """Return the web config in force; raise :class:`WebConfigError` while it is invalid."""
        self._refresh()
        if self._error is not None:
            raise WebConfigError(self._error)
        return self._web

    def _refresh(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        with self._lock:
            if now < self._next:
                return
            self._next = now + self.interval
            stamp = _stamp(self._files)
            if stamp == self._stamp:
                return
            self._reload(stamp)

    def _restamp(self, files: tuple[str, ...], before: tuple[Any, ...]) -> None:
        # The stamp taken *before* reading: a change made while reading shows next time.
        self._stamp = before if files == self._files else _stamp(files)
        self._files = files

    def _reload(self, before: tuple[Any, ...]) -> None:
        try:
            new = load_web_config(self.path)
        except WebConfigError as exc:
            self._restamp(exc.files or self._files, before)
            if str(exc) != self._error:
                log.error(
                    "web config is invalid; answering 500 until it is fixed",
                    extra={"err": str(exc)},
                )
            self._error = str(exc)
            return
        if (new.ssl_context is None) != (self._web.ssl_context is None):
            log.warning(
                "web config turns TLS on or off; that needs a restart, the server keeps its "
                "scheme and serves the rest of the new file",
                extra={"file": self.path},
            )
            if self._web.ssl_context is not None:
                new.ssl_context = self._web.ssl_context
        new.share_auth_state(self._web)
        self._restamp(new.files, before)
        self._web = new
        self._error = None
        self.reloads += 1
        log.info("web config reloaded", extra={"file": self.path})
