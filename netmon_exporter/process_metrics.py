"""CPU, memory and open files of the daemon's worker processes, read from /proc at scrape time.

``process_*`` (prometheus-client's ProcessCollector) covers the main process only, yet
the parsing happens in worker processes forked from a fork server. This collector finds
them from the daemon's own pid, so the ingest code needs no hooks and the workers never
touch metrics: through ``/proc/<pid>/task/<tid>/children`` (Linux 3.5+ with
``CONFIG_PROC_CHILDREN``, as every major distribution builds it), which reads only the
daemon and its descendants, however many other processes the host runs; where the
kernel lacks it, by reading every ``/proc/<pid>/stat`` and following parent pids.

Each descendant gets a ``worker`` label from a small closed set: ``fork_server``; a
slot ``"0"``.. ``"15"`` for workers, kept while the pid lives and handed to new pids
(lowest free slot first, in pid order); ``other`` for anything else (the resource
tracker, children of workers, workers beyond the slots). A replaced worker restarts
its slot's counter, which ``rate()`` handles; ``netmon_workers_cpu_seconds_total``
never restarts: it adds the CPU the kernel credits to parents for their reaped
children (``cutime``/``cstime``), so workers that exited are still in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .metrics import NAMESPACE, WORKER_PROCESS_HELP, WORKER_SLOTS

FORK_SERVER = "fork_server"
OTHER = "other"


@dataclass(frozen=True)
class ProcStat:
    """What one /proc/<pid>/stat says (times in clock ticks, rss in pages)."""

    pid: int
    ppid: int
    ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: reaped children, theirs included
    rss_pages: int


def parse_stat(pid: int, text: str) -> ProcStat:
    """Parse /proc/<pid>/stat; the command name may hold spaces and parentheses."""
    fields = text[text.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
        rss_pages=int(fields[21]),
    )


def descendants(stats: Iterable[ProcStat], root: int) -> list[ProcStat]:
    """Return the processes below ``root`` (children, their children...), in pid order."""
    children: dict[int, list[ProcStat]] = {}
    for st in stats:
        children.setdefault(st.ppid, []).append(st)
    out: list[ProcStat] = []
    todo = [root]
    seen = {root}
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.pid not in seen:  # a pid reused mid-scan must not loop
                seen.add(child.pid)
                out.append(child)
                todo.append(child.pid)
    return sorted(out, key=lambda st: st.pid)


class SlotTable:
    """Keep each worker pid on one slot while it lives; new pids take the lowest free slot."""

    def __init__(self, slots: int = WORKER_SLOTS) -> None:
        self.slots = slots
        self._by_pid: dict[int, int] = {}

    def assign(self, pids: Iterable[int]) -> dict[int, str]:
        live = sorted(set(pids))
        self._by_pid = {p: s for p, s in self._by_pid.items() if p in set(live)}
        free = sorted(set(range(self.slots)) - set(self._by_pid.values()))
        for pid in live:
            if pid not in self._by_pid and free:
                self._by_pid[pid] = free.pop(0)
        return {pid: str(self._by_pid[pid]) if pid in self._by_pid else OTHER for pid in live}


class WorkerProcessCollector(Collector):
    """Export CPU seconds, resident memory and open fds of the daemon's descendants."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        pid: int | None = None,
        proc: str | os.PathLike[str] = "/proc",
    ) -> None:
        self.proc = Path(proc)
        self.pid = os.getpid() if pid is None else pid
        self._slots = SlotTable()
        self._total_ticks = 0  # never decreases (a counter)
        try:
            self._ticks_per_second = os.sysconf("SC_CLK_TCK")
            self._page_size = os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            self._ticks_per_second, self._page_size = 100, 4096
        if registry is not None:
            registry.register(self)

    def _stat(self, pid: int) -> ProcStat | None:
        try:
            return parse_stat(pid, (self.proc / str(pid) / "stat").read_text())
        except (OSError, ValueError, IndexError):
            return None  # exited while we looked, or not ours to read

    def _children(self, pid: int) -> list[int] | None:
        """Return the children of every thread of ``pid``; None if /proc cannot say."""
        task = self.proc / str(pid) / "task"
        try:
            tids = os.listdir(task)
        except OSError:
            return None
        out: list[int] = []
        for tid in tids:
            try:
                text = (task / tid / "children").read_text()
            except FileNotFoundError:
                if tid == str(pid):
                    return None  # no CONFIG_PROC_CHILDREN (or a thread that just ended)
                continue
            except OSError:
                continue
            out.extend(int(c) for c in text.split() if c.isdigit())
        return out

    def _tree_stats(self) -> list[ProcStat] | None:
        """Read our pid and its descendants only; None where /proc has no children files."""
        me = self._stat(self.pid)
        if me is None:
            return None
        out = [me]
        todo, seen = [self.pid], {self.pid}
        while todo:
            pid = todo.pop()
            children = self._children(pid)
            if children is None and pid == self.pid:
                return None  # no children files here (or a fake /proc): walk all of /proc
            for child in children or ():
                if child in seen:  # a pid reused mid-walk must not loop
                    continue
                seen.add(child)
                st = self._stat(child)
                if st is not None:
                    out.append(st)
                    todo.append(child)
        return out

    def _stats(self) -> list[ProcStat]:
        tree = self._tree_stats()
        if tree is not None:
            return tree
        out: list[ProcStat] = []
        try:
            entries = list(os.scandir(self.proc))
        except OSError:
            return out
        for entry in entries:
            if entry.name.isdigit():
                st = self._stat(int(entry.name))
                if st is not None:
                    out.append(st)
        return out

    def _cmdline(self, pid: int) -> bytes:
        try:
            return (self.proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return b""

    def _open_fds(self, pid: int) -> int | None:
        try:
            return len(os.listdir(self.proc / str(pid) / "fd"))
        except OSError:
            return None

    def labels(self, below: list[ProcStat]) -> dict[int, str]:
        """Name each descendant: fork_server, a worker slot, or other."""
        names: dict[int, str] = {}
        workers = []
        for st in below:
            cmd = self._cmdline(st.pid)
            if st.ppid == self.pid and b"multiprocessing.forkserver" in cmd:
                names[st.pid] = FORK_SERVER
            elif st.ppid == self.pid and b"multiprocessing" in cmd:
                names[st.pid] = OTHER  # the resource tracker
            else:
                workers.append(st)
        servers = {pid for pid, name in names.items() if name == FORK_SERVER}
        # Workers are the fork server's children; anything else below us is "other".
        slotted = [st.pid for st in workers if st.ppid in servers or not servers]
        names.update(self._slots.assign(slotted))
        for st in workers:
            names.setdefault(st.pid, OTHER)
        return names

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        me = next((st for st in stats if st.pid == self.pid), None)
        below = descendants(stats, self.pid)
        names = self.labels(below)
        tick, page = self._ticks_per_second, self._page_size
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        fds: dict[str, float] = {}
        for st in below:
            name = names[st.pid]
            cpu[name] = cpu.get(name, 0.0) + st.ticks / tick  # its own CPU only
            rss[name] = rss.get(name, 0.0) + st.rss_pages * page
            open_fds = self._open_fds(st.pid)
            if open_fds is not None:
                fds[name] = fds.get(name, 0.0) + open_fds
        total = sum(st.ticks + st.child_ticks for st in below)
        if me is not None:
            total += me.child_ticks  # descendants that exited and were reaped by us
        self._total_ticks = max(self._total_ticks, total)

        ns, helps = NAMESPACE, WORKER_PROCESS_HELP
        families: list[Metric] = [
            CounterMetricFamily(
                f"{ns}_worker_cpu_seconds", helps["worker_cpu_seconds"], labels=["worker"]
            ),
            GaugeMetricFamily(
                f"{ns}_worker_resident_memory_bytes",
                helps["worker_resident_memory_bytes"],
                labels=["worker"],
            ),
            GaugeMetricFamily(f"{ns}_worker_open_fds", helps["worker_open_fds"], labels=["worker"]),
        ]
        for family, values in zip(families, (cpu, rss, fds), strict=True):
            for name in sorted(values, key=_label_order):
                family.add_metric([name], values[name])  # type: ignore[attr-defined]
            yield family
        total_family = CounterMetricFamily(
            f"{ns}_workers_cpu_seconds", helps["workers_cpu_seconds"]
        )
        total_family.add_metric([], self._total_ticks / tick)
        yield total_family


def _label_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)
