"""Hostile config files: bounded size and alias expansion, duplicate keys, URL credentials,
and ``--config.check`` loading exactly what start-up loads (issues 9 and 15).

The exact messages of the small cases live in ``tests/configs/invalid-*.yaml`` (checked by
``test_config.py``); this file covers what a folder of YAML files cannot: special files,
sizes, timing, the command line, start-up and the reload path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netmon_exporter.config import (
    ECHO_CHARS,
    MAX_CONFIG_BYTES,
    MAX_ERRORS,
    Config,
    ConfigError,
    load_config,
    parse_config,
)
from netmon_exporter.daemon import ConfigHolder
from netmon_exporter.http_server import ReloadOutcome
from netmon_exporter.models import DEFAULT_FEATURES, FORMAT_VERSION

CONFIGS = Path(__file__).parent / "configs"

# The classic "billion laughs": 9**9 strings once expanded, ~400 bytes of YAML.
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)
BOMB_CONFIG = BOMB + "capture:\n  directory: *i\n"
BOMB_ERRORS = [
    "a: YAML anchors (&name) are not supported (line 1)",
    *(
        f"{n}: YAML anchors (&name) and aliases (*name) are not supported; write the value out "
        f"(line {i})"
        for i, n in enumerate("bcdefghi", start=2)
    ),
    "capture.directory: YAML aliases (*name) are not supported; write the value out (line 11)",
]


def run_check(config: Path, *flags: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netmon_exporter", f"--config.file={config}", "--config.check"]
        + list(flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
    )


def start_up(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the daemon on a config it must refuse; it exits before serving."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon_exporter",
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=config.parent,
        stdin=subprocess.DEVNULL,
    )


def errors_of(text: str, base_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=base_dir)
    return info.value.errors


# ------------------------------------------------------------------------- aliases


def test_alias_bomb_is_refused_at_once_without_expanding(tmp_path: Path) -> None:
    start = time.monotonic()
    assert errors_of(BOMB_CONFIG, tmp_path) == BOMB_ERRORS
    assert time.monotonic() - start < 1


def test_alias_bomb_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BOMB_CONFIG)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == BOMB_ERRORS
    assert str(info.value).startswith(f"{path}: a: YAML anchors")


def test_a_small_alias_is_refused_too(tmp_path: Path) -> None:
    # Old code: the alias was expanded and the error echoed the whole list.
    text = "capture:\n  patterns: &p ['*.pcap']\n  done_directory: *p\n  directory: .\n"
    assert errors_of(text, tmp_path) == [
        "capture.patterns: YAML anchors (&name) are not supported (line 2)",
        "capture.done_directory: YAML aliases (*name) are not supported; write the value out "
        "(line 3)",
    ]


def test_merge_keys_through_aliases_are_refused(tmp_path: Path) -> None:
    text = "base: &b {workers: 2}\nprocessing:\n  <<: *b\n"
    errors = errors_of(text, tmp_path)
    assert errors == [
        "base: YAML anchors (&name) are not supported (line 1)",
        "processing.<<: YAML aliases (*name) are not supported; write the value out (line 3)",
    ]


def test_alias_bomb_check_cli_returns_promptly(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BOMB_CONFIG)
    start = time.monotonic()
    proc = run_check(config, timeout=15)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"FAILED: {config}", *(f"  {e}" for e in BOMB_ERRORS)]
    assert elapsed < 10


def test_deep_nesting_stops_before_the_parser_recurses_too_far(tmp_path: Path) -> None:
    # Old code: RecursionError (not a ConfigError) from PyYAML's recursive composer.
    errors = errors_of("x: " + "[" * 5000 + "]" * 5000 + "\n", tmp_path)
    assert errors == [f"x{'[0]' * 16}: nested deeper than 16 levels (line 1)"]


# ------------------------------------------------------------------------- size and file kinds


def test_config_symlinked_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "config.yaml"
    link.symlink_to("/dev/zero")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(link)
    assert info.value.errors == [
        f"<file>: {link} (a link to /dev/zero) is a character device, not a regular file"
    ]
    assert time.monotonic() - start < 1


def test_dev_zero_check_cli_returns_promptly(tmp_path: Path) -> None:
    link = tmp_path / "config.yaml"
    link.symlink_to("/dev/zero")
    proc = run_check(link, timeout=15)
    assert proc.returncode == 1
    assert "is a character device, not a regular file" in proc.stderr


@pytest.mark.timeout(20)
def test_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    # Old code: open() blocked until something wrote to the pipe.
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(fifo)
    assert info.value.errors == [f"<file>: {fifo} is a named pipe, not a regular file"]


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.errors == [f"<file>: {tmp_path} is a directory, not a regular file"]


def test_oversized_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"capture:\n  directory: .\n" + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [
        f"<file>: {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB, the most a config "
        "file may be (is this the right file?)"
    ]


def test_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    body = b"capture:\n  directory: .\n"
    path = tmp_path / "config.yaml"
    path.write_bytes(body + b"#" * (MAX_CONFIG_BYTES - len(body)))
    assert isinstance(load_config(path), Config)


def test_oversized_text_is_refused_by_parse_config(tmp_path: Path) -> None:
    assert errors_of("#" * (MAX_CONFIG_BYTES + 1), tmp_path) == [
        f"<root>: the configuration is larger than {MAX_CONFIG_BYTES // 1024} KiB, the most "
        "a config file may be (is this the right file?)"
    ]
    # Characters are not bytes: the limit is on the UTF-8 size.
    assert len(errors_of("#" + "é" * (MAX_CONFIG_BYTES // 2), tmp_path)) == 1


def test_worst_case_file_under_the_limit_is_parsed_within_seconds(tmp_path: Path) -> None:
    items = (MAX_CONFIG_BYTES - 20) // 2
    text = "x: [" + ",".join(["1"] * items) + "]\n"
    start = time.monotonic()
    assert errors_of(text, tmp_path)[0].startswith("x: unknown key")
    assert time.monotonic() - start < 5


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"capture:\n  directory: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"<file>: {path} is not UTF-8 text (byte 22)"]


# ------------------------------------------------------------------------- values in messages


def test_huge_values_are_clipped_in_messages(tmp_path: Path) -> None:
    # Old code echoed each value in full (the alias bomb's error was gigabytes long).
    many = ", ".join(["1"] * 20000)
    text = (
        "capture:\n"
        f"  directory: [{many}]\n"
        f"  after_processing: '{'x' * 20000}'\n"
        f"? {'k' * 5000}\n: 1\n"
    )
    assert errors_of(text, tmp_path) == [
        f"'{'k' * 36}...: unknown key (allowed: alerting, alertmanager, capture, detectors, "
        "flows, health, ignore, llm, models, output, processing, state, windows)",
        "capture.directory: [1, 1, 1, 1, ...] is not a path",
        f"capture.after_processing: '{'x' * (ECHO_CHARS - 4)}... is not one of keep, move, delete",
    ]
    errors = errors_of(f"capture:\n  directory: .\n  patterns: ['{'y/' * 20000}']\n", tmp_path)
    assert errors == [
        f"capture.patterns[0]: '{'y/' * 38}... must be a file name pattern, not a path"
    ]


def test_error_list_is_capped(tmp_path: Path) -> None:
    text = "".join(f"unknown{i}: 1\n" for i in range(500))
    errors = errors_of(text, tmp_path)
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1] == f"<root>: {500 - MAX_ERRORS} more errors not shown"


def test_overlong_numbers_are_refused_before_conversion(tmp_path: Path) -> None:
    # Old code: ValueError (Python's int digit limit) or a quadratic base-60 conversion.
    sexagesimal = "1" + ":00" * 20000
    errors = errors_of(f"capture:\n  directory: .\n  shard_index: {sexagesimal}\n", tmp_path)
    assert errors == [
        f"capture.shard_index: number with {len(sexagesimal)} characters is too long "
        "(at most 64; line 3)"
    ]


def test_large_numbers_within_the_limit_are_range_errors(tmp_path: Path) -> None:
    big = "9" * 64
    errors = errors_of(
        f"capture:\n  directory: .\n  shard_index: {big}\n  min_age_seconds: {big}\n", tmp_path
    )
    assert sorted(errors) == [
        "capture.min_age_seconds: 1e+64 is above the maximum 300",
        f"capture.shard_index: {big} is above the maximum 255",
    ]


@pytest.mark.parametrize(
    "value",
    ["!!int two", "!!int ''", "!!float x", "!!bool maybe", "!!timestamp x", "!!binary a"],
)
def test_bad_explicitly_tagged_scalars_are_config_errors(tmp_path: Path, value: str) -> None:
    # Old code: ValueError, IndexError, KeyError, AttributeError from PyYAML's constructors.
    errors = errors_of(f"capture:\n  directory: .\nprocessing:\n  workers: {value}\n", tmp_path)
    assert len(errors) == 1 and errors[0].startswith("<root>: invalid YAML at line 4"), errors


def test_overlong_path_is_reported_not_raised(tmp_path: Path) -> None:
    # A name longer than the file system allows made Path.is_dir() raise OSError.
    errors = errors_of(f"capture:\n  directory: {'d' * 5000}\n", tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith("capture.directory: ") and "does not exist" in errors[0]
    assert len(errors[0]) < 400


# ------------------------------------------------------------------------- duplicate keys


def test_duplicate_keys_are_refused_with_all_other_errors(tmp_path: Path) -> None:
    text = "capture:\n  directory: .\n  directory: ./x\nprocessing:\n  workers: 99\n"
    assert errors_of(text, tmp_path) == [
        "capture.directory: duplicate key (line 3; first on line 2)",
        "processing.workers: 99 is above the maximum 16",
    ]


# ------------------------------------------------------------------------- URL credentials


def test_url_credentials_are_refused_and_never_echoed() -> None:
    path = CONFIGS / "invalid-url-credentials.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [e.split(":", 1)[0] for e in info.value.errors] == [
        "llm.url",
        "alertmanager.urls[1]",
        "alertmanager.urls[2]",
    ]
    assert "llm.api_key_env" in info.value.errors[0]
    assert "s3cret" not in str(info.value)
    proc = run_check(path)
    assert proc.returncode == 1
    assert "s3cret" not in proc.stdout + proc.stderr


def test_url_credentials_are_refused_even_when_the_llm_is_off(tmp_path: Path) -> None:
    errors = errors_of(
        "capture:\n  directory: .\nllm:\n  enabled: false\n  url: http://u:p@h/v1\n", tmp_path
    )
    assert len(errors) == 1 and errors[0].startswith("llm.url: must not contain a user name")


def test_url_credentials_are_refused_without_path_checks() -> None:
    with pytest.raises(ConfigError):
        parse_config("llm:\n  url: https://u:p@h/v1\n", check_paths=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9093",
        "https://am.example.com:9093/prefix?x=a@b",
        "http://[::1]:9093",
        "http://am.example.com/path@with-at",
    ],
)
def test_urls_without_credentials_are_accepted(tmp_path: Path, url: str) -> None:
    cfg = parse_config(
        f"capture:\n  directory: .\nalertmanager:\n  urls: ['{url}']\n", base_dir=tmp_path
    )
    assert cfg.alertmanager.urls == (url,)


# ------------------------------------------------------------------------- check vs start-up


def _tampered_model(state: Path) -> None:
    """A model whose file does not match the sha256 its metadata records."""
    state.mkdir()
    (state / "anomaly.skops").write_bytes(b"not the model that was trained")
    (state / "anomaly.skops.json").write_text(
        json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "kind": "anomaly",
                "features": list(DEFAULT_FEATURES),
                "model_sha256": "0" * 64,
            }
        )
    )


def test_metadata_file_name_is_what_models_expects(tmp_path: Path) -> None:
    from netmon_exporter.models import metadata_path

    assert metadata_path(tmp_path / "anomaly.skops") == tmp_path / "anomaly.skops.json"


@pytest.mark.parametrize("case", ["missing-capture-directory", "tampered-model"])
def test_check_fails_exactly_when_start_up_refuses(tmp_path: Path, case: str) -> None:
    config = tmp_path / "config.yaml"
    if case == "missing-capture-directory":
        config.write_text("capture:\n  directory: captures\n")
        expected = f"capture.directory: {tmp_path / 'captures'} does not exist"
    else:
        (tmp_path / "captures").mkdir()
        _tampered_model(tmp_path / "state")
        config.write_text(
            "capture:\n  directory: captures\nstate:\n  directory: state\n"
            "models:\n  anomaly_path: anomaly.skops\n"
        )
        expected = "does not match its metadata"
    check = run_check(config)
    daemon = start_up(config)
    assert daemon.returncode == 1, daemon.stderr
    assert expected in daemon.stderr
    assert check.returncode == 1, check.stdout  # old code: "OK" for the tampered model
    assert check.stderr.startswith(f"FAILED: {config}\n")
    assert expected in check.stderr


def test_check_passes_what_start_up_accepts(tmp_path: Path) -> None:
    (tmp_path / "captures").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("capture:\n  directory: captures\n")
    proc = run_check(config)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"OK: {config} is valid\n"


def test_check_loads_the_web_config_start_up_loads(tmp_path: Path) -> None:
    (tmp_path / "captures").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("capture:\n  directory: captures\n")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {}\nbogus: 1\n")
    proc = run_check(config, f"--web.config.file={web}")
    assert proc.returncode == 1
    assert f"--web.config.file: {web}: bogus: unknown key" in proc.stderr


# ------------------------------------------------------------------------- the reload path


def _holder(tmp_path: Path) -> ConfigHolder:
    (tmp_path / "captures").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text("capture:\n  directory: captures\nprocessing:\n  workers: 1\n")
    return ConfigHolder.load(path)


def _no_models(_new: Config, _old: Config) -> object:
    return lambda: None


def _reload(holder: ConfigHolder) -> ReloadOutcome:
    start = time.monotonic()
    outcome = holder.try_reload(_no_models)  # type: ignore[arg-type]
    assert time.monotonic() - start < 2
    return outcome


def test_reload_refuses_an_alias_bomb_and_keeps_the_old_config(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    old = holder.config
    holder.path.write_text(BOMB_CONFIG)
    outcome = _reload(holder)
    assert not outcome.ok
    assert outcome.message.startswith("a: YAML anchors (&name) are not supported (line 1); ")
    assert len(outcome.message) < 2000
    assert holder.config is old


def test_reload_refuses_a_config_replaced_by_a_link_to_dev_zero(tmp_path: Path) -> None:
    # Old code: the digest read /dev/zero until memory ran out.
    holder = _holder(tmp_path)
    old = holder.config
    holder.path.unlink()
    holder.path.symlink_to("/dev/zero")
    outcome = _reload(holder)
    assert not outcome.ok
    assert outcome.message == (
        f"<file>: {holder.path} (a link to /dev/zero) is a character device, not a regular file"
    )
    assert holder.config is old
