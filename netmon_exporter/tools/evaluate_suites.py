"""Run and print the ``benign`` and ``hard`` suites and the near-threshold sweeps.

Scoring uses the same matching as the standard scenarios (right detector, right
attacker, or the victim for distributed and spoofed attacks). The benign suite's bar
is silence: every finding is listed. The hard suite's bar is that every case's
truths are found in every seed. Sweeps print the probability of detection per value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DetectorsConfig
from ..detection import Detection
from ..flow_schema import FlowBatch
from .scenarios import Scenario, Truth
from .suites import SWEEPS, Case, cases, generate_case, sweep_case

Analyse = Callable[[Path, DetectorsConfig], tuple[FlowBatch, list[Detection]]]
Match = Callable[[Detection, Truth], bool]


@dataclass
class CaseResult:
    case: Case
    scenario: Scenario
    flows: int
    detections: list[Detection] = field(default_factory=list)


def run_cases(
    selected: Sequence[Case],
    seeds: Sequence[int],
    work: Path,
    detectors: DetectorsConfig,
    analyse: Analyse,
    keep: bool = False,
) -> list[CaseResult]:
    out = []
    for c in selected:
        for seed in seeds:
            sc = generate_case(c, seed, work)
            flows, dets = analyse(sc.path, detectors)
            out.append(CaseResult(c, sc, len(flows), dets))
            if not keep:
                sc.path.unlink(missing_ok=True)
    return out


def found(r: CaseResult, match: Match) -> bool:
    """Every required truth of the case was found in this seed."""
    return all(any(match(d, t) for d in r.detections) for t in r.scenario.truths if t.required)


def benign_findings(results: Sequence[CaseResult]) -> list[CaseResult]:
    return [r for r in results if r.case.suite == "benign" and r.detections]


def hard_misses(results: Sequence[CaseResult], match: Match) -> list[CaseResult]:
    return [r for r in results if r.case.suite == "hard" and not found(r, match)]


def format_benign(results: Sequence[CaseResult]) -> list[str]:
    lines = ["\nBusy benign roles (every finding is a false alarm):"]
    by_case: dict[str, list[CaseResult]] = {}
    for r in results:
        by_case.setdefault(r.case.key, []).append(r)
    for key, rs in by_case.items():
        n = sum(len(r.detections) for r in rs)
        flows = sum(r.flows for r in rs)
        lines.append(f"  {key:<40} {flows:>8,} flows  {'quiet' if not n else f'{n} FINDINGS'}")
        for r in rs:
            for d in r.detections:
                lines.append(
                    f"      seed {r.scenario.seed}: {d.detector} [{d.severity}] "
                    f"{d.source} -> {d.target}: {d.summary}"
                )
    return lines


def format_hard(results: Sequence[CaseResult], match: Match) -> list[str]:
    lines = ["\nEvasive attacks (right detector and attacker, or victim for 'many'):"]
    by_case: dict[str, list[CaseResult]] = {}
    for r in results:
        by_case.setdefault(r.case.key, []).append(r)
    for key, rs in by_case.items():
        hits = sum(found(r, match) for r in rs)
        want = "; ".join(
            f"{t.detector} {t.attacker}->{t.victim or '*'}"
            for t in rs[0].scenario.truths
            if t.required
        )
        lines.append(f"  {key:<40} found {hits}/{len(rs)}  ({want})")
        for r in rs:
            if not found(r, match):
                got = ", ".join(f"{d.detector} {d.source}->{d.target}" for d in r.detections)
                lines.append(f"      seed {r.scenario.seed} missed; raised: {got or 'nothing'}")
    return lines


@dataclass
class SweepRow:
    value: float
    found: int
    seeds: int


def run_sweeps(
    names: Sequence[str],
    seeds: Sequence[int],
    work: Path,
    detectors: DetectorsConfig,
    analyse: Analyse,
    match: Match,
) -> dict[str, list[SweepRow]]:
    out: dict[str, list[SweepRow]] = {}
    for name in names:
        s = SWEEPS[name]
        rows = []
        for value in s.values:
            rs = run_cases([sweep_case(s, value)], seeds, work, detectors, analyse)
            rows.append(SweepRow(value, sum(found(r, match) for r in rs), len(rs)))
        out[name] = rows
    return out


def format_sweeps(sweeps: dict[str, list[SweepRow]]) -> list[str]:
    lines = ["\nNear-threshold sweeps (probability of detection per value):"]
    for name, rows in sweeps.items():
        s = SWEEPS[name]
        lines.append(f"  {name} ({s.detector}; {s.parameter}):")
        lines.append("    " + "  ".join(f"{r.value:>8g}" for r in rows))
        lines.append("    " + "  ".join(f"{r.found / r.seeds:>8.2f}" for r in rows))
    return lines


def suite_cases(suite: str) -> list[Case]:
    return cases(suite)
