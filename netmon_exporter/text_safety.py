"""One home for making untrusted text safe to show: in logs, reports, prompts, labels and CSVs.

DNS names come from packet contents, file names are bytes the OS accepted, and
servers put whatever they like in error bodies. None of it may break a log line in
two, move a terminal's cursor, reverse the reading order of a line (bidi overrides),
hide text (zero-width and tag characters) or start a spreadsheet formula.

*Unsafe* characters are those in the Unicode categories Cc (C0/C1 controls, DEL),
Cf (format characters: bidi controls, zero-width characters, tag characters, BOM),
Cs (lone surrogates, which is what ``os.fsdecode`` makes of bytes that are not
UTF-8), Zl (U+2028) and Zp (U+2029). Three treatments, one per destination:

- :func:`escape_text` / :func:`escape_log_value` (logs): every unsafe character and
  the backslash itself become an escape sequence, so the result is one line and
  distinct inputs stay distinct (the escaping can be undone).
- :func:`clean_text` / :func:`clean_data` (traffic-derived text in reports, prompts,
  Alertmanager labels and annotations, CSV cells): unsafe characters become escape
  sequences, backslashes are left alone so cleaning twice changes nothing, and the
  length is bounded.
- :func:`plain_text` (server text and LLM replies, read as prose): terminal escape
  sequences are removed whole, whitespace of any kind (line breaks, tabs, NEL,
  U+2028/U+2029) becomes one space, other unsafe characters are removed, and the
  length is bounded.

Escape sequences: ``\\n``, ``\\r``, ``\\t``; ``\\xNN`` for a byte that was not valid
UTF-8 (a surrogate-escaped U+DC80..U+DCFF); ``\\uNNNN`` / ``\\UNNNNNNNN`` for any other
unsafe character; ``\\\\`` for a backslash (log escaping only).

Secrets are not handled here: see :mod:`netmon_exporter.redaction`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from numbers import Number
from typing import Any

#: Unicode categories whose characters are never written as they are.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Every code point in UNSAFE_CATEGORIES (Unicode 15, a superset for older data), as
# ranges: listed rather than computed so that importing costs nothing. A test checks
# that the running Python's unicodedata has no unsafe character outside them.
_UNSAFE_RANGES = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_UNSAFE_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _UNSAFE_RANGES)
_UNSAFE_RE = re.compile(f"[{_UNSAFE_CLASS}]")
_UNSAFE_SPLIT_RE = re.compile(f"([{_UNSAFE_CLASS}])")
_LOG_ESCAPE_RE = re.compile(f"[\\\\{_UNSAFE_CLASS}]")
# Terminal escape sequences (CSI "ESC [ ... m", OSC "ESC ] ... BEL"): dropped whole from prose.
_ANSI_RE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# Python's \s covers \t\n\v\f\r, \x1c-\x1f, NEL, U+2028/9 and the Unicode spaces.
_SPACE_RE = re.compile(r"\s+")
_SHORT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# logfmt values with these (or empty ones) are written in double quotes; keys never have them.
_LOGFMT_SPECIAL_RE = re.compile(r'[ ="]')

#: A cell starting with one of these (after leading spaces, which spreadsheets skip)
#: is read as a formula by spreadsheets (OWASP "CSV injection"); full-width forms too.
CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
ELLIPSIS = "…"


def to_text(value: Any) -> str:
    """Return ``value`` as text; bytes (file names) keep undecodable bytes as surrogates."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        if isinstance(value, str):
            return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def _escape_char(c: str) -> str:
    short = _SHORT_ESCAPES.get(c)
    if short is not None:
        return short
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape_match(match: re.Match[str]) -> str:
    return _escape_char(match.group())


def escape_text(value: Any) -> str:
    """Escape every unsafe character and every backslash: one line, and reversible."""
    return _LOG_ESCAPE_RE.sub(_escape_match, to_text(value))


def escape_log_value(value: Any) -> str:
    """Return ``value`` as one logfmt value: escaped, double-quoted when it must be."""
    text = escape_text(value)
    if text and not _LOGFMT_SPECIAL_RE.search(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def escape_log_key(key: Any) -> str:
    """Return ``key`` as a logfmt key: escaped, with spaces, ``=`` and ``"`` as ``_``."""
    return _LOGFMT_SPECIAL_RE.sub("_", escape_text(key)) or "_"


def clean_text(value: Any, max_len: int | None = None) -> str:
    """Escape unsafe characters in traffic-derived text and bound its length.

    Backslashes are kept as they are, so cleaning cleaned text changes nothing. A
    longer result is cut to ``max_len`` characters ending in ``…``, never inside an
    escape sequence.
    """
    text = to_text(value)
    if max_len is not None:
        text = text[: max_len + 1]  # escaping only lengthens: the rest would be cut anyway
    if not _UNSAFE_RE.search(text):
        return _cut(text, max_len)
    pieces = _UNSAFE_SPLIT_RE.split(text)  # plain, unsafe, plain, unsafe, ..., plain
    for i in range(1, len(pieces), 2):
        pieces[i] = _escape_char(pieces[i])
    if max_len is None or sum(map(len, pieces)) <= max_len:
        return "".join(pieces)
    if max_len < len(ELLIPSIS):
        return ""
    budget = max_len - len(ELLIPSIS)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if len(piece) > budget:
            if i % 2 == 0:  # plain text may be cut; an escape sequence is kept whole or left out
                out.append(piece[:budget])
            break
        out.append(piece)
        budget -= len(piece)
    return "".join(out) + ELLIPSIS


def _cut(text: str, max_len: int | None) -> str:
    if max_len is None or len(text) <= max_len:
        return text
    return text[: max_len - len(ELLIPSIS)] + ELLIPSIS if max_len >= len(ELLIPSIS) else ""


def clean_data(value: Any, max_len: int | None = None) -> Any:
    """Return JSON-like data with :func:`clean_text` applied to every string and key.

    Numbers (booleans and numpy scalars too) and ``None`` stay as they are; tuples become lists; any other
    object becomes its cleaned ``str()``, so that nothing unsafe hides in what a JSON
    encoder's ``default=str`` would write.
    """
    if isinstance(value, str):
        return clean_text(value, max_len)
    if value is None or isinstance(value, Number):  # numpy scalars included
        return value
    if isinstance(value, Mapping):
        return {_clean_key(k, max_len): clean_data(v, max_len) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_data(v, max_len) for v in value]
    return clean_text(value, max_len)


def _clean_key(key: Any, max_len: int | None) -> Any:
    if key is None or isinstance(key, Number):
        return key
    return clean_text(key, max_len)


def plain_text(value: Any, max_len: int | None = None) -> str:
    """Return ``value`` as one line of prose: terminal escape sequences removed whole,
    whitespace runs as one space, other unsafe characters removed, trimmed, and cut to
    ``max_len`` characters (ending in ``…``)."""
    text = _SPACE_RE.sub(" ", _ANSI_RE.sub("", to_text(value)))
    text = _UNSAFE_RE.sub("", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if max_len is not None and len(text) > max_len:
        keep = max_len - len(ELLIPSIS)
        text = text[:keep].rstrip() + ELLIPSIS if keep >= 0 else ""
    return text


def csv_cell(value: Any) -> str:
    """Return a text cell for a CSV that spreadsheets will not run as a formula.

    The text is cleaned (:func:`clean_text`); one starting with ``=``, ``+``, ``-``,
    ``@`` (or their full-width forms), even after spaces, gets a leading ``'``, as
    OWASP recommends. A plain number (``-1``, ``-0.5``, ``+3e2``) is left as it is:
    it is data, not a formula. CSV quoting is the writer's job.
    """
    text = clean_text(value)
    lead = text.lstrip(" \u00a0")
    if lead.startswith(CSV_FORMULA_STARTS) and not _PLAIN_NUMBER_RE.fullmatch(lead):
        return "'" + text
    return text
