"""The key of the hashes computed over what traffic controls (addresses, ports, names).

Detectors group and look up rows by 64-bit hashes (SplitMix64 and MurmurHash3
finalisers), the flow tables' distinct-name sketches hash query names, and the flow
sample ranks flows by a hash. Those hashes are fast and well spread, but they are public
and invertible: unkeyed, an attacker can compute offline an address in their own IPv6
/64 whose key equals a benign pair's (a beacon hidden in that pair's timing), names that
all fall into one sketch register (a tunnel of thousands of names counted as one), or
source ports and times that rank their flows last (thinned away under load). With a
key mixed into the first step of each hash, none of that can be computed without the
key.

The key is 0 until someone sets it: 0 gives the unkeyed hashes, the same values every
run (the library, the ``flows`` command, tests). The daemon draws a secret key at start
(:func:`draw`) and hands it to its workers with their tasks (``FlowSettings.hash_key``);
a worker uses the key of the task it runs (:func:`use`), so rows hashed in a worker and
in the main process agree. ``evaluate`` uses a fixed key of its own. The key is never
logged, exported or written anywhere but the carry files of the flow tables that use it
(in the state directory), and it changes at each start: nothing hashed with it outlives
the process, except the sketches of carried flows, which keep the key of their table.
"""

from __future__ import annotations

import secrets

import numpy as np

_MASK = (1 << 64) - 1
_key = 0  # signed 64-bit (what an int64 array holds)


def current() -> int:
    """The key, as a signed 64-bit integer."""
    return _key


def word() -> np.uint64:
    """The key as the uint64 word hashes mix in."""
    return np.uint64(_key & _MASK)


def use(key: int) -> None:
    """Hash with ``key`` (any integer; its low 64 bits are the key) from now on."""
    global _key
    key &= _MASK
    _key = key - (1 << 64) if key >= 1 << 63 else key


def draw() -> int:
    """Draw a secret key, use it and return it (the daemon, at start)."""
    use(secrets.randbits(64))
    return _key
