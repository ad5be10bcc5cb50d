"""Evaluation suites beyond the standard scenarios: busy benign roles and evasive attacks.

The standard scenarios (:mod:`.scenarios`) check that each detector finds a plain
attack. Trust needs two more questions answered on traffic the detectors were not
tuned on:

* ``benign``: does ordinary but busy network life stay quiet? Each case is a role a
  real site has (a monitoring server polling hundreds of hosts, NTP clients, mail
  relays, cameras...), written over the site background for 15 minutes with
  realistic timing (Poisson arrivals, RTTs, retransmissions, not aligned to window
  boundaries). Its truths are empty: any finding is a false alarm.
* ``hard``: are evasive attacks found, with the right detector and attacker (or the
  victim and ``many`` for distributed ones)? Each case names its truths.

A case is a function ``(capture, site, start, duration) -> truths`` registered with
:func:`case`; modules of cases are listed in :data:`CASE_MODULES` (one line each).
Near-threshold sweeps (:class:`Sweep`) vary one parameter of a case (a rate, a
jitter) and measure the probability of detection at each value, which is how
``docs/detectors.md`` states each detector's measured edge.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scenarios import Scenario, Truth, _background, _Capture, _Site, _site, write_scenario

CaseFn = Callable[[_Capture, _Site, float, float], tuple[Truth, ...]]
SUITES = ("benign", "hard")

# Modules that register cases with @case (imported by load_cases, one line per module).
CASE_MODULES: tuple[str, ...] = (
    "netmon_exporter.tools.cases_monitoring",
    "netmon_exporter.tools.cases_beacon",
    "netmon_exporter.tools.cases_dns",
    "netmon_exporter.tools.cases_floods",
    "netmon_exporter.tools.cases_scans",
    "netmon_exporter.tools.cases_bruteforce",
    "netmon_exporter.tools.cases_evasion",
    "netmon_exporter.tools.cases_icmp",
)


@dataclass(frozen=True)
class Case:
    suite: str  # one of SUITES
    name: str
    build: CaseFn
    duration: float = 900.0  # seconds of capture (15 minutes: several windows and beats)
    background: bool = True  # written over the standard site background
    intensity: float = 1.0  # background intensity
    doc: str = ""

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"


CASES: dict[str, Case] = {}


def case(
    suite: str,
    name: str,
    *,
    duration: float = 900.0,
    background: bool = True,
    intensity: float = 1.0,
) -> Callable[[CaseFn], CaseFn]:
    """Register ``fn`` as a case of ``suite`` (its docstring's first line describes it)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}")

    def register(fn: CaseFn) -> CaseFn:
        c = Case(
            suite,
            name,
            fn,
            duration,
            background,
            intensity,
            (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
        if c.key in CASES:
            raise ValueError(f"case {c.key} registered twice")
        CASES[c.key] = c
        return fn

    return register


def load_cases() -> dict[str, Case]:
    """Import every case module and return the registry."""
    for module in CASE_MODULES:
        importlib.import_module(module)
    return CASES


def cases(suite: str) -> list[Case]:
    return [c for c in load_cases().values() if c.suite == suite]


def generate_case(c: Case, seed: int, out_dir: Path) -> Scenario:
    """Write case ``c`` for ``seed`` over the site background; return it with its truths.

    The seed comes from the case's name (not its position), so adding cases never
    changes the captures of others. The start is random within a day, never aligned
    to window boundaries.
    """
    rng = np.random.default_rng([seed, zlib.crc32(c.key.encode())])
    cap = _Capture(rng)
    site = _site(rng)
    start = 1_700_000_000.0 + (seed % 1000) * 86_400 + float(rng.uniform(0, 3600))
    if c.background:
        _background(cap, site, start, c.duration, c.intensity)
    cap.tagging = True
    truths = c.build(cap, site, start, c.duration)
    path = Path(out_dir) / f"case-{c.suite}-{c.name}-seed{seed}.pcap"
    return write_scenario(cap, c.key, seed, path, truths)


@dataclass(frozen=True)
class Sweep:
    """One parameter of an attack varied across the detection edge.

    ``make(value)`` returns the case function for that value; ``values`` go from
    the first value the detector must catch (the evaluation's bar: found in every
    seed) towards values it is not expected to catch. The evaluation prints, per
    value, the fraction of seeds where the truth was found.
    """

    name: str
    detector: str
    parameter: str  # e.g. "ports per minute", "jitter %"
    values: Sequence[float]
    make: Callable[[float], CaseFn]
    duration: float = 900.0


SWEEPS: dict[str, Sweep] = {}


def sweep(s: Sweep) -> Sweep:
    if s.name in SWEEPS:
        raise ValueError(f"sweep {s.name} registered twice")
    SWEEPS[s.name] = s
    return s


def sweep_case(s: Sweep, value: float) -> Case:
    return Case("hard", f"{s.name}@{value:g}", s.make(value), s.duration)
