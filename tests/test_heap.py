"""heap.py: long-lived objects frozen out of the garbage collector, garbage collected first.

Each test runs in a fresh interpreter: freezing is for the life of a process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_freezing_collects_garbage_first_and_exempts_what_lives() -> None:
    out = _run(
        """
        import gc, weakref
        from netmon_exporter import heap

        class Node:
            pass

        def cycle():
            a, b = Node(), Node()
            a.other, b.other = b, a
            return a

        kept = [cycle() for _ in range(1000)]
        lost = weakref.ref(cycle())  # garbage: only a cycle holds it
        assert lost() is not None
        frozen = heap.freeze_long_lived()
        assert lost() is None  # collected before the freeze, never frozen
        assert frozen == gc.get_freeze_count() >= 2000
        assert len(gc.get_objects(generation=2)) == 0
        # a collection now walks only what came after the freeze
        n = len(gc.get_objects())
        assert n < 1000, n
        # a frozen object without a cycle is still freed when its last reference goes
        probe = weakref.ref(kept[0].other)
        kept[0].other.other = None
        kept[0].other = None
        assert probe() is None
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_refreezing_waits_until_the_oldest_generation_has_grown() -> None:
    out = _run(
        """
        import gc
        from netmon_exporter import heap

        heap.freeze_long_lived()
        before = gc.get_freeze_count()
        assert not heap.refreeze_if_grown(5000)  # nothing new yet
        loaded = [[i] for i in range(8000)]  # code loaded later: long-lived objects
        gc.collect()  # they survive collections into the oldest generation
        assert len(gc.get_objects(generation=2)) >= 8000
        assert heap.refreeze_if_grown(5000)
        assert gc.get_freeze_count() >= before + 8000
        assert len(gc.get_objects(generation=2)) == 0
        assert not heap.refreeze_if_grown(5000)
        print("ok")
        """
    )
    assert out.strip() == "ok"
