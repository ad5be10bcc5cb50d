"""Keep secrets out of logs, errors, summaries and metrics: the one home for redaction.

Servers echo what they were sent (an ``Authorization`` header in an error body, a
URL with ``user:password@``), and models repeat what they read. :func:`redact_secrets`
replaces the secrets it knows (the configured API key) and the shapes secrets come in
(URL user info, ``Bearer``/``Basic`` credentials, ``Authorization``-style headers,
``api_key=``-style parameters, ``"password": "..."`` JSON members) with
:data:`REDACTED`. The log formatters apply it to every record as a last line of
defence; code that holds a secret passes it explicitly.

Making text safe to display (control characters, length) is
:mod:`netmon_exporter.text_safety`'s job, done after redaction.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[REDACTED]"

# scheme://user:password@host -> scheme://[REDACTED]@host
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@\"'<>]+@")
# Authorization: Bearer xyz / "X-Api-Key": "xyz" -> the whole value
_HEADER_RE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)"
    r"([\"']?\s*[:=]\s*[\"']?)((?:[a-z]+\s+)?[^\s\"',;}]+)"
)
# Bearer xyz / Basic dXNlcjpwYXNz (only when the token looks like a secret, not a word)
_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic|token)(\s+)([A-Za-z0-9\-._~+/]+=*)")
_SECRET_NAMES = (
    r"api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token"
    r"|client[_-]?secret|secret|token|password|passwd|pwd|key|x-amz-signature|x-amz-credential"
    r"|signature|sig"
)
# ?api_key=xyz&... / password=xyz
_PARAM_RE = re.compile(rf"(?i)\b({_SECRET_NAMES})=([^\s&#\"',;]+)")
# "api_key": "xyz"
_JSON_MEMBER_RE = re.compile(rf'(?i)("(?:{_SECRET_NAMES})"\s*:\s*")((?:[^"\\]|\\.)*)(")')


def redact_url(url: str) -> str:
    """Remove ``user:password@`` from a URL so it can be logged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _looks_secret(token: str) -> bool:
    """Tell a credential (``sk-abc123``, base64) from an English word (``authentication``)."""
    if len(token) < 8:
        return False
    return any(c.isdigit() or c in "-._~+/=" for c in token) or any(c.isupper() for c in token[1:])


def _scheme_token(match: re.Match[str]) -> str:
    scheme, space, token = match.groups()
    core = token.rstrip(".")  # a full stop ends the sentence, not the token
    if not _looks_secret(core):
        return match.group()
    return f"{scheme}{space}{REDACTED}{token[len(core) :]}"


def redact_secrets(text: str, *secrets: str) -> str:
    """Replace ``secrets`` (e.g. the API key) and anything shaped like a credential."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _URL_USERINFO_RE.sub(rf"\1{REDACTED}@", text)
    text = _HEADER_RE.sub(rf"\1\2{REDACTED}", text)
    text = _SCHEME_RE.sub(_scheme_token, text)
    text = _PARAM_RE.sub(rf"\1={REDACTED}", text)
    return _JSON_MEMBER_RE.sub(rf"\1{REDACTED}\3", text)


def short_cause(exc: BaseException) -> str:
    """Name the innermost cause (e.g. ``Connection refused``) without requests' long repr.

    The repr of a requests exception quotes the URL, credentials included; the
    innermost ``OSError``'s strerror or the exception's type name never does.
    """
    inner: BaseException = exc
    for _ in range(10):
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return type(inner).__name__
