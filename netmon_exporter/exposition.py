"""Rendered ``/metrics`` bodies, kept for at most ``max_age`` seconds and shared by scrapers.

Rendering the exposition (collecting ~400 samples, formatting them, walking the worker
processes in /proc) costs the main process a few milliseconds of CPU, all of it holding
the GIL the daemon's own loop needs. A scrape therefore serves a *render*, not the
registry: the newest render of its variant (its format and ``name[]`` filter) if that
render started at most ``max_age`` seconds before the scrape arrived, else the one in
progress (same condition), else a new one. So:

* no scrape gets values read more than ``max_age`` seconds before it arrived (a render
  reads the registry after it starts; its age is counted from its start);
* concurrent scrapes share one render, and renders never overlap (they would only share
  the GIL); the gzip of a render is made once, when first asked for;
* a render older than ``refresh_after`` is re-rendered off the request path the first
  time a scrape is served from it, so scrapers more frequent than ``max_age`` find a fresh
  render waiting and never wait for one. Prometheus (every 15 s or so) always gets a
  render made for it.

A scraper that comes back on a schedule longer than ``max_age`` (Prometheus: every
``scrape_interval``, 15 s or more) would find every render expired and wait for a new
one (a render of the daemon's ~450 samples costs 6-9 ms). So the cache notes when each
variant is asked for (:meth:`RenderCache.visited`), and when the last visits came on a
schedule (the same interval, within 2 % and 20 ms, three visits in a row; or two
scrapers alternating, an HA pair of Prometheus servers: five visits) it tells the owner
when to render ahead of the next visit: a little before it, by twice the last render's
time, so that visit is served a render made for it, still within ``max_age``. A
scraper that does not come back costs one render; visits that keep no schedule cost
nothing, and are served as before.

The owner may also say that what it exports changed in a way a scraper must see at once
(a reload was applied, the health state changed): :meth:`RenderCache.invalidate`. A
scrape that arrives after that gets a render that started after it.

This module knows nothing of Prometheus: it caches whatever ``render(key)`` returns
(``http_server`` renders with prometheus-client). Keys are bounded by ``max_entries``
(least recently used dropped first), and expired renders are dropped as new ones come.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

MAX_AGE = 1.0  # seconds; docs/architecture.md says it (Prometheus scrapes every 15 s or so)
# Visits on a schedule: intervals this long get a render made ahead of the next visit
# (shorter ones find one fresh anyway, through refresh_after); intervals agree within
# this share plus this many seconds.
AHEAD_MIN_INTERVAL, AHEAD_MAX_INTERVAL = 1.5, 600.0
AHEAD_TOLERANCE, AHEAD_SLACK = 0.02, 0.02
GZIP_LEVEL = 6  # as the Go client (gzip.DefaultCompression); 9 costs more for little less

K = TypeVar("K", bound=Hashable)


class Rendered:
    """One render: its body, when it started, and its gzip (made once, on first use)."""

    __slots__ = ("_gzip", "_lock", "_refresh_claimed", "body", "started")

    def __init__(self, body: bytes, started: float) -> None:
        self.body = body
        self.started = started
        self._gzip: bytes | None = None
        self._lock = threading.Lock()
        self._refresh_claimed = False

    @property
    def gzip_ready(self) -> bool:
        return self._gzip is not None

    def gzipped(self) -> bytes:
        with self._lock:
            if self._gzip is None:
                self._gzip = gzip.compress(self.body, compresslevel=GZIP_LEVEL)
            return self._gzip


class _Run:
    def __init__(self) -> None:
        self.started: float | None = None  # None while it waits for the previous render
        self.done = threading.Event()
        self.result: Rendered | None = None
        self.error: BaseException | None = None


class RenderCache(Generic[K]):
    """Renders of ``render(key)`` shared by concurrent callers; see the module docstring."""

    def __init__(
        self,
        render: Callable[[K], bytes],
        max_age: float = MAX_AGE,
        refresh_after: float | None = None,
        max_entries: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_age < 0:
            raise ValueError("max_age must be >= 0")
        self._render = render
        self.max_age = max_age
        self.refresh_after = max_age / 2 if refresh_after is None else refresh_after
        self.max_entries = max(1, max_entries)
        self._clock = clock
        self._lock = threading.Lock()  # the state below; never held while rendering
        self._rendering = threading.Lock()  # one render at a time
        self._entries: OrderedDict[K, Rendered] = OrderedDict()
        self._runs: dict[K, _Run] = {}
        self._not_before = float("-inf")  # renders that started earlier are stale
        self._visits: OrderedDict[K, list[float]] = OrderedDict()  # the last 5 per key
        self._render_seconds = 0.0  # how long the last render took
        self.renders = 0  # how many renders ran (for tests and debugging)

    def invalidate(self) -> None:
        """Serve no render that started before now (a reload or health change happened)."""
        with self._lock:
            self._not_before = self._clock()

    def _fresh(self, key: K, now: float) -> Rendered | None:
        entry = self._entries.get(key)
        if entry is None or now - entry.started > self.max_age or entry.started < self._not_before:
            return None
        self._entries.move_to_end(key)
        return entry

    def visited(self, key: K) -> float | None:
        """Note a visit (a scrape) of ``key`` now; return in how many seconds a render
        should start so that the next visit, if it keeps the schedule of the last ones,
        finds it made (None: no schedule seen). See the module docstring."""
        with self._lock:
            now = self._clock()
            times = self._visits.pop(key, [])
            times = [*times[-4:], now]
            self._visits[key] = times
            while len(self._visits) > self.max_entries:
                self._visits.popitem(last=False)
            gap = _next_gap(times)
            if gap is None:
                return None
            lead = min(max(2 * self._render_seconds, 0.02) + 0.03, self.max_age / 2)
            return gap - lead if gap > lead else None

    def peek(self, key: K) -> tuple[Rendered | None, bool]:
        """Return the fresh render of ``key`` (or None) without ever waiting for a render.

        The flag is True, once per render, when that render is older than
        ``refresh_after`` and none is under way: the caller should then call
        :meth:`refresh` off its hot path.
        """
        with self._lock:
            now = self._clock()
            entry = self._fresh(key, now)
            if entry is None:
                return None, False
            due = (
                now - entry.started > self.refresh_after
                and not entry._refresh_claimed
                and key not in self._runs
            )
            if due:
                entry._refresh_claimed = True
            return entry, due

    def get(self, key: K) -> Rendered:
        """Return a fresh render of ``key``: cached, in progress, or made now (blocks)."""
        return self._get(key, use_cached=True)

    def refresh(self, key: K, with_gzip: bool = False) -> None:
        """Render ``key`` anew (or join the render under way), gzip included if asked."""
        entry = self._get(key, use_cached=False)
        if with_gzip:
            entry.gzipped()

    def _get(self, key: K, use_cached: bool) -> Rendered:
        with self._lock:
            now = self._clock()
            entry = self._fresh(key, now) if use_cached else None
            if entry is not None:
                return entry
            run = self._runs.get(key)
            # A render that started more than max_age ago is too old to join: queue a new one.
            leader = run is None or (
                run.started is not None
                and (now - run.started > self.max_age or run.started < self._not_before)
            )
            if leader:
                run = self._runs[key] = _Run()
        assert run is not None
        if leader:
            self._lead(key, run)
        else:
            run.done.wait()
        if run.error is not None:
            raise run.error
        assert run.result is not None
        return run.result

    def _lead(self, key: K, run: _Run) -> None:
        with self._rendering:
            with self._lock:
                run.started = started = self._clock()
            try:
                result = Rendered(self._render(key), started)
                run.result = result
                with self._lock:
                    self.renders += 1
                    self._render_seconds = max(self._clock() - started, 0.0)
                    old = self._entries.get(key)
                    if old is None or old.started <= started:
                        self._entries[key] = result
                        self._entries.move_to_end(key)
                    self._prune(self._clock())
            except BaseException as exc:
                run.error = exc
            finally:
                with self._lock:
                    if self._runs.get(key) is run:
                        del self._runs[key]
                run.done.set()

    def _prune(self, now: float) -> None:
        for k in [k for k, e in self._entries.items() if now - e.started > self.max_age]:
            del self._entries[k]
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= AHEAD_TOLERANCE * max(a, b) + AHEAD_SLACK


def _next_gap(times: list[float]) -> float | None:
    """Seconds from the last of ``times`` (visits, oldest first) to the next visit if
    they keep a schedule: one scraper (the last two intervals agree) or two alternating
    (the last four intervals repeat in pairs); None otherwise."""
    d = [b - a for a, b in zip(times, times[1:], strict=False)]
    if len(d) >= 2 and _agree(d[-1], d[-2]):
        period, gap = d[-1], d[-1]
    elif len(d) >= 4 and _agree(d[-1], d[-3]) and _agree(d[-2], d[-4]):
        period, gap = d[-1] + d[-2], d[-2]
    else:
        return None
    return gap if AHEAD_MIN_INTERVAL <= period <= AHEAD_MAX_INTERVAL else None
