"""Config decoding: every invalid-*.yaml is rejected with exactly the messages in its .errors twin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netmon_exporter.config import (
    Config,
    ConfigError,
    iter_settings,
    load_config,
    parse_config,
    restart_required_changes,
)
from netmon_exporter.tools.reference_docs import (
    render_detectors_markdown,
    render_markdown,
    render_metrics_markdown,
    render_yaml,
)

CONFIGS = Path(__file__).parent / "configs"
ROOT = Path(__file__).parent.parent
INVALID = sorted(CONFIGS.glob("invalid-*.yaml"))


def expected_errors(path: Path) -> list[str]:
    text = path.with_suffix(".errors").read_text(encoding="utf-8")
    return [line.replace("{DIR}", str(CONFIGS)) for line in text.splitlines() if line]


def test_there_are_invalid_configs_and_each_has_its_errors_file() -> None:
    assert len(INVALID) >= 15
    for path in INVALID:
        assert path.with_suffix(".errors").exists(), path


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_reports_exact_errors(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == expected_errors(path)


def test_all_errors_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "invalid-many-errors.yaml")
    assert len(info.value.errors) == 5


def test_shipped_config_is_valid_and_equals_defaults(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config.yaml", check_paths=False)
    defaults = parse_config("", base_dir=ROOT, check_paths=False)
    assert cfg == defaults


def test_shipped_config_and_reference_are_generated_from_the_schema() -> None:
    assert (ROOT / "config.yaml").read_text(encoding="utf-8") == render_yaml() + "\n"
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == render_markdown()
    assert (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8") == render_metrics_markdown()
    detectors_md = (ROOT / "docs" / "detector-reference.md").read_text(encoding="utf-8")
    assert detectors_md == render_detectors_markdown()


def test_every_setting_is_documented_with_help() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    for key, _default, meta in iter_settings():
        assert meta["help"], key
        assert f"{key.rsplit('.', 1)[-1]}:" in text, key


def test_product_ranges_are_kept() -> None:
    ranges = {k: (m["min"], m["max"]) for k, _, m in iter_settings()}
    assert ranges["processing.interval_seconds"] == (10, 3600)
    assert ranges["windows.max_windows"] == (1, 1000)
    assert ranges["capture.min_age_seconds"] == (0, 300)
    assert ranges["processing.workers"] == (1, 16)
    assert ranges["processing.max_retries"] == (0, 10)
    assert ranges["processing.retry_delay_seconds"] == (1, 60)
    assert ranges["processing.batch_size"][0] == 1


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "caps").mkdir()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("capture:\n  directory: caps\noutput:\n  directory: out\n")
    cfg = load_config(cfg_file)
    assert cfg.capture.directory == tmp_path / "caps"
    assert cfg.output.directory == tmp_path / "out"


def test_integers_are_accepted_for_float_settings(tmp_path: Path) -> None:
    cfg = parse_config("capture:\n  directory: .\n  min_age_seconds: 0\n", base_dir=tmp_path)
    assert cfg.capture.min_age_seconds == 0.0 and isinstance(cfg.capture.min_age_seconds, float)


def test_restart_required_changes_lists_state_directory(tmp_path: Path) -> None:
    a = parse_config("state:\n  directory: a\n", base_dir=tmp_path, check_paths=False)
    b = parse_config(
        "state:\n  directory: b\nprocessing:\n  workers: 4\n", base_dir=tmp_path, check_paths=False
    )
    assert restart_required_changes(a, b) == ["state.directory"]
    assert restart_required_changes(a, a) == []


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.errors == [f"<file>: {tmp_path / 'nope.yaml'} does not exist"]


def test_config_check_cli_exit_codes_and_output() -> None:
    bad = CONFIGS / "invalid-retries-and-delay.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "netmon_exporter", f"--config.file={bad}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    for err in expected_errors(bad):
        assert err in proc.stderr
    good = CONFIGS / "valid-minimal.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "netmon_exporter", f"--config.file={good}", "--config.check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK")


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.capture = None  # type: ignore[misc]
