"""What a file's name says: whether it is ours, its kind, its rotation series, its shard.

Plain functions of names and settings, shared by the scanning shell and the
scheduler core.
"""

from __future__ import annotations

import fnmatch
import re
import zlib
from collections.abc import Sequence

_KIND_SUFFIXES = (
    (".pcapng.gz", "pcapng"),
    (".pcapng", "pcapng"),
    (".csv.gz", "csv"),
    (".csv", "csv"),
)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Return whether a file name matches one of the glob patterns (case-sensitive)."""
    if name.startswith("."):
        return False  # hidden and temporary files (".name.tmp") of writers
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def in_shard(name: str, shard_index: int, shard_count: int) -> bool:
    """Return whether this instance owns a shard key (a stable CRC-32 of it).

    The service passes the file's rotation series, or its name when it has none.
    """
    if shard_count <= 1:
        return True
    return zlib.crc32(name.encode("utf-8", "surrogateescape")) % shard_count == shard_index


def file_kind(name: str) -> str:
    """Guess the kind (metrics.FILE_KINDS) from the name; the parser has the last word."""
    lower = name.lower()
    for suffix, kind in _KIND_SUFFIXES:
        if lower.endswith(suffix):
            return kind
    return "pcap"


def series_of(name: str, pattern: re.Pattern[str] | None) -> str | None:
    """Return the rotation series a file belongs to, or None if it stands alone."""
    if pattern is None:
        return None
    m = pattern.match(name)
    if m is None:
        return None
    try:
        source = m.group("source")
    except IndexError:
        return None
    return source if source is not None else None


def owned(
    name: str,
    patterns: Sequence[str],
    source: re.Pattern[str] | None,
    shard_index: int,
    shard_count: int,
) -> bool:
    """Return whether this instance takes a file of this name.

    Shards go by rotation series so a series stays on one instance and its flows
    are carried across files; files outside a named series shard by their own name.
    """
    if not matches(name, patterns):
        return False
    return in_shard(series_of(name, source) or name, shard_index, shard_count)
