"""Property tests: any YAML-ish text gives a Config or a ConfigError, never anything else.

The texts come from a grammar of the real keys and hostile pieces (anchors, aliases and
merges, duplicate keys, deep nesting, huge and odd numbers, explicit tags, credentials in
URLs, odd unicode) with random junk spliced in. ``--config.check`` is run on a sample of
them: it must always answer, OK (exit 0) or FAILED with the errors (exit 1).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netmon_exporter.config import (
    MAX_ERRORS,
    Config,
    ConfigError,
    field_default,
    iter_settings,
    parse_config,
)

SECTIONS = [f.name for f in dataclasses.fields(Config)]
LEAVES = sorted({key.rsplit(".", 1)[-1] for key, _, _ in iter_settings()})
DETECTORS = sorted({key.split(".")[1] for key, _, _ in iter_settings() if key.startswith("det")})

ODD_SCALARS = [
    *("true", "false", "yes", "off", "~", "null", "''", '""', ".", "./captures", "captures"),
    *("keep", "move", "delete", "'*.pcap'", "[]", "{}", "-", "? x", ": x", "|", ">"),
    *(".inf", "-.inf", ".nan", "0x1F", "0o17", "017", "0b101", "1:30", "1:30:00.5", "1_000"),
    *("1e3", "1.5e3", "-0.0", "+12", "2001-12-14", "2001-12-14t21:59:43.10-05:00"),
    *("!!int x", "!!int ''", "!!float x", "!!bool maybe", "!!timestamp x", "!!binary a"),
    *("!!python/object/apply:os.system ['true']", "!!set {a, b}", "!!omap [a: 1]"),
    *("!!str 5", "!!float 1e3", "!foo bar", "!<tag:x> y", "!!null ''", "!!map {a: 1}"),
    *("http://u:p@h/v1", "http://127.0.0.1:9093", "https://[::1", "ftp://x", "u:p@h:9093"),
    *('"\\ud800"', '"\\x00"', '"\\U0010FFFF"', "'\u202e\u200b'", "\ufeff", "'\u00e9\u4e2d'"),
    *("*a", "*nope", "&a 1", "&a [1, 2]", "&b {workers: 2}", "<<: *b", "%YAML 1.1", "---"),
]


def _quoted(text: str) -> str:
    return json.dumps(text)  # a valid YAML double-quoted scalar


# Inside the grammar, text without control characters (the YAML reader refuses those at
# once, which would hide everything else); the spliced junk below has them.
words = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=10)

keys = st.one_of(
    st.sampled_from(SECTIONS + LEAVES + DETECTORS),
    st.sampled_from(["<<", "? x", "'quoted'", '"a b"', "1", "null", "true", "[a]", "{a: 1}"]),
    words.map(_quoted),
    words,
)
scalars = st.one_of(
    st.sampled_from(ODD_SCALARS),
    st.integers(min_value=-(10**80), max_value=10**80).map(str),
    st.integers(min_value=0, max_value=400).map(lambda n: "9" * n),
    st.floats().map(repr),
    words.map(_quoted),
    words,
    st.integers(min_value=0, max_value=40).map(lambda n: "[" * n + "1" + "]" * n),
)
values = st.recursive(
    st.one_of(scalars, st.tuples(st.sampled_from(["&a ", "&b ", ""]), scalars).map("".join)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(keys, inner), max_size=4).map(
            lambda kvs: "{" + ", ".join(f"{k}: {v}" for k, v in kvs) + "}"
        ),
    ),
    max_leaves=12,
)
block = st.lists(st.tuples(st.sampled_from(LEAVES + ["<<", "x"]), values), max_size=5).map(
    lambda kvs: "\n" + "".join(f"  {k}: {v}\n" for k, v in kvs)
)
section = st.tuples(
    st.one_of(st.sampled_from(SECTIONS), keys), st.one_of(block, values.map(lambda v: f" {v}\n"))
).map(lambda kv: f"{kv[0]}:{kv[1]}")


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    return _quoted(str(value))


def _field_text(f: dataclasses.Field[object], pad: str) -> st.SearchStrategy[str]:
    default = field_default(f)
    if dataclasses.is_dataclass(default):
        return _block(type(default), pad + "  ").map(lambda body: f"{pad}{f.name}:\n{body}")
    plausible = _render(default)
    value = st.one_of(st.just(plausible), st.just(plausible), st.just(plausible), scalars, values)
    return value.map(lambda v: f"{pad}{f.name}: {v}\n")


def _block(cls: type, pad: str = "") -> st.SearchStrategy[str]:
    """Text of a block mapping of ``cls``'s fields: real keys, mostly plausible values."""
    fields = dataclasses.fields(cls)
    return st.lists(st.sampled_from(fields).flatmap(lambda f: _field_text(f, pad)), max_size=6).map(
        "".join
    )


# Real keys with plausible values (some documents are valid), or the free grammar; then,
# half of the time, a piece of junk spliced in at a random place.
documents = st.tuples(
    st.one_of(_block(Config), st.lists(section, max_size=6).map("".join)),
    st.one_of(st.text(max_size=6), st.sampled_from(ODD_SCALARS)),
    st.floats(min_value=0, max_value=1),
    st.booleans(),
).map(
    lambda t: t[0][: int(len(t[0]) * t[2])] + t[1] + t[0][int(len(t[0]) * t[2]) :] if t[3] else t[0]
)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "captures").mkdir()
    return base


def _check_errors(errors: list[str]) -> None:
    assert errors
    assert len(errors) <= MAX_ERRORS + 1
    for err in errors:
        assert isinstance(err, str)
        assert "\n" not in err and len(err) < 1000, err
        err.encode("utf-8")  # printable on a UTF-8 terminal: no lone surrogates


@settings(
    max_examples=200,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=documents)
def test_parse_config_gives_a_config_or_a_config_error(base_dir: Path, text: str) -> None:
    try:
        cfg = parse_config(text, base_dir=base_dir, source="fuzz.yaml")
    except ConfigError as exc:
        _check_errors(exc.errors)
    else:
        assert isinstance(cfg, Config)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=documents)
def test_config_check_always_answers_ok_or_the_errors(base_dir: Path, text: str) -> None:
    site = Path(tempfile.mkdtemp(dir=base_dir))
    (site / "captures").mkdir()
    config = site / "config.yaml"
    config.write_bytes(text.encode("utf-8", "surrogatepass"))
    proc = subprocess.run(
        [sys.executable, "-m", "netmon_exporter", f"--config.file={config}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=site,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:
        assert proc.stdout == f"OK: {config} is valid\n"
    else:
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.splitlines()
        assert lines[0] == f"FAILED: {config}"
        assert len(lines) >= 2 and all(line.startswith("  ") for line in lines[1:]), lines
