"""Named health checks combined into healthy / degraded / unhealthy.

Each check has a severity: failing a *critical* check makes the processor
``unhealthy`` (it cannot do its job: no directory to read, no ledger to write);
failing a *degrading* check makes it ``degraded`` (it works, but falls behind or
loses an optional component). Plain data in, plain data out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    critical: bool  # failing it makes the processor unhealthy (else degraded)
    reason: str  # why it passes or fails, for humans


@dataclass(frozen=True)
class HealthReport:
    state: str
    checks: tuple[CheckResult, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "checks": {
                c.name: {"ok": c.ok, "critical": c.critical, "reason": c.reason}
                for c in self.checks
            },
        }


@dataclass(frozen=True)
class HealthInputs:
    """What the daemon knows at the moment of the check."""

    capture_directory: Path
    state_directory: Path
    output_directory: Path
    ledger_error: str | None = None
    backlog_growth_streak: int = 0
    backlog_growth_limit: int = 5
    oldest_ready_age_seconds: float = 0.0
    max_lag_seconds: float = 600.0
    # how long ago the oldest closed window still waiting for (or in) analysis closed
    analysis_wait_seconds: float = 0.0
    windows_awaiting_analysis: int = 0
    recent_files: int = 0
    recent_failures: int = 0
    error_ratio_threshold: float = 0.2
    llm_enabled: bool = False
    llm_error: str | None = None
    alertmanager_enabled: bool = False
    alertmanager_error: str | None = None
    ingest_problems: tuple[str, ...] = ()  # contained errors, output writes, watcher


def _dir_check(name: str, path: Path, mode: int, what: str) -> CheckResult:
    if not path.exists():
        return CheckResult(name, False, True, f"{path} does not exist")
    if not path.is_dir():
        return CheckResult(name, False, True, f"{path} is not a directory")
    if not os.access(path, mode):
        return CheckResult(name, False, True, f"{path} is not {what}")
    return CheckResult(name, True, True, f"{path} is {what}")


def _writable_or_creatable(name: str, path: Path) -> CheckResult:
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing != path:
        ok = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        reason = f"{path} will be created" if ok else f"{path} cannot be created under {existing}"
        return CheckResult(name, ok, True, reason)
    return _dir_check(name, path, os.W_OK | os.X_OK, "writable")


def evaluate(inp: HealthInputs) -> HealthReport:
    """Run every check and combine them."""
    checks = [
        _dir_check("capture_directory", inp.capture_directory, os.R_OK | os.X_OK, "readable"),
        _state_check(inp),
        _writable_or_creatable("output_storage", inp.output_directory),
        _keeping_up(inp),
        _error_ratio(inp),
        _optional("llm", inp.llm_enabled, inp.llm_error, "LLM endpoint"),
        _optional("alertmanager", inp.alertmanager_enabled, inp.alertmanager_error, "Alertmanager"),
        _ingestion(inp),
    ]
    if any(not c.ok and c.critical for c in checks):
        state = UNHEALTHY
    elif any(not c.ok for c in checks):
        state = DEGRADED
    else:
        state = HEALTHY
    return HealthReport(state, tuple(checks))


def _state_check(inp: HealthInputs) -> CheckResult:
    base = _writable_or_creatable("state_storage", inp.state_directory)
    if not base.ok:
        return base
    if inp.ledger_error:
        return CheckResult("state_storage", False, True, f"ledger unusable: {inp.ledger_error}")
    return CheckResult("state_storage", True, True, base.reason)


def _keeping_up(inp: HealthInputs) -> CheckResult:
    if inp.backlog_growth_streak >= inp.backlog_growth_limit:
        return CheckResult(
            "keeping_up",
            False,
            False,
            f"backlog grew over {inp.backlog_growth_streak} consecutive intervals",
        )
    if inp.oldest_ready_age_seconds > inp.max_lag_seconds:
        return CheckResult(
            "keeping_up",
            False,
            False,
            f"oldest waiting file has been ready for "
            f"{inp.oldest_ready_age_seconds:.0f}s (limit {inp.max_lag_seconds:.0f}s)",
        )
    if inp.analysis_wait_seconds > inp.max_lag_seconds:
        return CheckResult(
            "keeping_up",
            False,
            False,
            f"{inp.windows_awaiting_analysis} closed window(s) wait for analysis, the oldest "
            f"closed {inp.analysis_wait_seconds:.0f}s ago (limit {inp.max_lag_seconds:.0f}s)",
        )
    return CheckResult("keeping_up", True, False, "backlog is being worked off")


def _error_ratio(inp: HealthInputs) -> CheckResult:
    if inp.recent_files == 0:
        return CheckResult("error_ratio", True, False, "no recent files")
    ratio = inp.recent_failures / inp.recent_files
    ok = ratio <= inp.error_ratio_threshold
    return CheckResult(
        "error_ratio",
        ok,
        False,
        f"{inp.recent_failures} of {inp.recent_files} recent files failed "
        f"({ratio:.0%}, limit {inp.error_ratio_threshold:.0%})",
    )


def _optional(name: str, enabled: bool, error: str | None, what: str) -> CheckResult:
    if not enabled:
        return CheckResult(name, True, False, f"{what} not configured")
    if error:
        return CheckResult(name, False, False, f"{what} failing: {error}")
    return CheckResult(name, True, False, f"{what} reachable")


def _ingestion(inp: HealthInputs) -> CheckResult:
    if inp.ingest_problems:
        return CheckResult("ingestion", False, False, "; ".join(inp.ingest_problems))
    return CheckResult("ingestion", True, False, "no ingestion errors")
