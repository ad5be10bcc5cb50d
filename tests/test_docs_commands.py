"""Commands shown in the docs run, in a copy of the repository, and say what the docs say.

A fenced code block preceded by a marker comment is run by this file::

    <!-- doc-test -->                       every command must exit 0
    <!-- doc-test daemon -->                the same, with `make run` serving meanwhile
    <!-- doc-test timeout=120; setup: mkdir -p captures && printf ... > bad.yaml -->

In a block whose lines start with ``$ `` (a transcript), the lines after a command
are its expected output (stdout and stderr), line by line; ``...`` in an expected
line matches any text. Otherwise each line is a command (a trailing ``\\`` continues
it). Each block runs in a fresh copy of the repository's tracked files, with the
virtual environment of these tests first on ``PATH`` (``netmon-exporter``,
``python``) and linked as ``.venv``. In ``daemon`` mode the Quick start's server runs
(``make run`` with the virtual environment as installed, never reinstalled, on a free
port) and ``localhost:9864`` in the commands points at it.

tests/test_docs_guards.py keeps statements true; this keeps commands true. A block
that cannot run here (installing packages, talking to systemd or Docker) is not
marked; :data:`EXPECTED_BLOCKS` makes sure the marked ones are not dropped silently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/*.md", "*/README.md", "alerts/runbook.md")
MARK = re.compile(r"^<!-- doc-test(?P<opts>.*?)-->\s*$")
FENCE = re.compile(r"^\s*```")
VENV = Path(sys.executable).parent.parent
# (doc, start of its first command) of every block that must stay marked
EXPECTED_BLOCKS = {
    ("README.md", "curl -s localhost:9864/metrics | grep '^netmon_'"),
    ("README.md", "cat bad.yaml"),
    ("docs/flow-features.md", "netmon-exporter flows samples/icmp6.pcap -o icmp6.csv"),
    ("grafana/README.md", ".venv/bin/python grafana/dashboards.py"),
}


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the marker
    lines: tuple[str, ...]
    daemon: bool = False
    timeout: float = 60.0
    setup: str = ""

    @property
    def transcript(self) -> bool:
        return any(line.startswith("$ ") for line in self.lines)

    def steps(self) -> list[Step]:
        """The commands, each with its expected output (None: only exit 0 is expected)."""
        if not self.transcript:
            out: list[Step] = []
            pending = ""
            for line in self.lines:
                if line.rstrip().endswith("\\"):  # continued on the next line
                    pending += line.rstrip()[:-1] + " "
                    continue
                if (pending + line).strip():
                    out.append(Step((pending + line).strip()))
                pending = ""
            return out
        steps: list[Step] = []
        for line in self.lines:
            if line.startswith("$ "):
                steps.append(Step(line[2:].strip(), []))
            elif steps:
                steps[-1].expected.append(line)  # type: ignore[union-attr]
        return steps

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Step:
    command: str
    expected: list[str] | None = None

    def matches(self, output: str) -> bool:
        assert self.expected is not None
        want = [line.rstrip() for line in self.expected]
        while want and not want[-1]:
            want.pop()
        got = [line.rstrip() for line in output.rstrip("\n").split("\n")] if output else []
        return len(got) == len(want) and all(
            re.fullmatch(".*".join(map(re.escape, w.split("..."))), g)
            for w, g in zip(want, got, strict=True)
        )


def _options(text: str, doc: str, line: int) -> dict[str, object]:
    opts: dict[str, object] = {}
    text = text.strip()
    if "setup:" in text:
        text, _, setup = text.partition("setup:")
        opts["setup"] = setup.strip()
    for token in filter(None, (t.strip() for t in text.split(";"))):
        if token == "daemon":
            opts["daemon"] = True
        elif token.startswith("timeout="):
            opts["timeout"] = float(token.removeprefix("timeout="))
        else:
            raise ValueError(f"{doc}:{line}: unknown doc-test option {token!r}")
    return opts


def marked_blocks() -> list[Block]:
    blocks = []
    docs = sorted({p for pattern in DOCS for p in ROOT.glob(pattern)})
    for path in docs:
        lines = path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            m = MARK.match(line)
            if not m:
                continue
            doc = str(path.relative_to(ROOT))
            assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), (
                f"{doc}:{i + 1}: a doc-test marker must be followed by a fenced code block"
            )
            end = next(j for j in range(i + 2, len(lines)) if FENCE.match(lines[j]))
            opts = _options(m["opts"], doc, i + 1)
            blocks.append(Block(doc, i + 1, tuple(lines[i + 2 : end]), **opts))  # type: ignore[arg-type]
    return blocks


# ------------------------------------------------------------------ the sandbox


def repository_copy(dest: Path) -> Path:
    """Copy the tracked files (modification times kept), and link the test virtualenv."""
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
        files = [ROOT / os.fsdecode(n) for n in names if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        skip = {".git", ".venv", "captures", "output", "state"}
        files = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]
    # numba's compiled code too (keyed by the sources' times, which copy2 keeps): workers
    # import the package from their working directory, and compiling it again costs ~20 s
    files += list((ROOT / "netmon_exporter").rglob("__pycache__/*.nb[ic]"))
    for src in files:
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / src.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / ".venv").symlink_to(VENV)
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class QuickStartServer:
    """``make run`` in the copy, on a free port; the venv as installed (``STAMP=``)."""

    site: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> QuickStartServer:
        log = (self.site / "make-run.log").open("wb")
        self.proc = subprocess.Popen(
            ["make", "run", "STAMP=", f"LISTEN=127.0.0.1:{self.port}"],
            cwd=self.site,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # make and the exporter: stopped together below
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("make run exited:\n" + self.log())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return self
            except urllib.error.HTTPError as exc:  # 503 while starting: close it, ask again
                exc.close()
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("make run did not get ready:\n" + self.log())

    def log(self) -> str:
        return (self.site / "make-run.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started, nothing else
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def quick_start(tmp_path: Path) -> Iterator[QuickStartServer]:
    server = QuickStartServer(repository_copy(tmp_path / "repo"))
    try:  # a server that never got ready is stopped too (it would outlive the test)
        yield server.start()
    finally:
        server.stop()


def run_step(step: Step, site: Path, timeout: float, port: int | None = None) -> str:
    command = step.command
    if port is not None:
        command = command.replace("localhost:9864", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=site,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    if step.expected is None:
        assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{output[-3000:]}"
    else:
        shown = "\n".join(step.expected)
        assert step.matches(output), f"{command!r} printed:\n{output}\nthe doc says:\n{shown}"
    return output


# ------------------------------------------------------------------ the tests


BLOCKS = marked_blocks()


def run_block(block: Block, site: Path, port: int | None = None) -> None:
    if block.setup:
        run_step(Step(block.setup), site, block.timeout)
    for step in block.steps():
        run_step(step, site, block.timeout, port)


@pytest.mark.integration
@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.daemon], ids=str)
def test_marked_block_runs_as_documented(block: Block, tmp_path: Path) -> None:
    run_block(block, repository_copy(tmp_path / "repo"))


def test_the_marked_blocks_are_still_marked() -> None:
    found = [(b.doc, b.steps()[0].command) for b in BLOCKS]
    lost = {
        (doc, start)
        for doc, start in EXPECTED_BLOCKS
        if not any(d == doc and command.startswith(start) for d, command in found)
    }
    assert not lost, f"no longer marked: {lost}"


def test_transcript_matching() -> None:
    step = Step("x", ["49 packets, 14 flows in ... s (... packets/s) -> a.csv", ""])
    assert step.matches("49 packets, 14 flows in 0.01 s (4,900 packets/s) -> a.csv\n")
    assert not step.matches("49 packets, 15 flows in 0.01 s (4,900 packets/s) -> a.csv\n")
    assert not step.matches("49 packets, 14 flows in 0.01 s (4,900 packets/s) -> a.csv\nmore\n")


@pytest.mark.integration
def test_quick_start_serves_the_samples(quick_start: QuickStartServer) -> None:
    """Guards README.md: "Flow CSVs and window reports appear under `./output`, the ledger under `./state`".

    `make run` as the Quick start says, then every ``daemon`` block against it.
    """
    site = quick_start.site
    daemon_blocks = [b for b in BLOCKS if b.daemon]
    assert daemon_blocks
    for block in daemon_blocks:
        run_block(block, site, quick_start.port)
    samples = {p.name for p in (site / "samples").iterdir() if p.suffix in (".pcap", ".pcapng")}
    assert {p.name for p in (site / "captures").iterdir()} == samples

    def csvs() -> int:
        return len(list((site / "output" / "flows").glob("*.csv")))

    deadline = time.monotonic() + 60
    while csvs() < len(samples) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert csvs() >= len(samples), quick_start.log()
    assert (site / "state" / "ledger.sqlite3").is_file()
    while not list((site / "output" / "windows").glob("window-*.json")):
        assert time.monotonic() < deadline, "no window report:\n" + quick_start.log()
        time.sleep(0.5)


@pytest.mark.integration
def test_config_yaml_validation_command_works_on_a_fresh_clone(tmp_path: Path) -> None:
    """Guards config.yaml: "mkdir -p captures && netmon-exporter --config.file=config.yaml --config.check"."""
    site = repository_copy(tmp_path / "repo")
    assert not (site / "captures").exists()  # as on a fresh clone
    header = (site / "config.yaml").read_text(encoding="utf-8").split("\n\n", 1)[0]
    commands = [
        line.removeprefix("#").strip()
        for line in header.splitlines()
        if "--config.check" in line and line.startswith("#   ")
    ]
    assert len(commands) == 1, header
    output = run_step(Step(commands[0]), site, 60)
    assert output.strip() == "OK: config.yaml is valid"
    assert shlex.split(commands[0])[0] == "mkdir"
