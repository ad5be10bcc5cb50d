"""A test that guards a doc sentence fails to collect here when the sentence is gone.

A test names the sentence it guards in its docstring: ``Guards README.md: "/-/ready
..."`` (a quote without double quotes; line breaks and indentation do not matter).
Tests written before this convention, in files other work owns, are listed in
:data:`GUARDED_ELSEWHERE` with the same check. Either way, editing a guarded
sentence away fails this file, naming the test to update with it, so the link
between a statement and its test cannot rot silently.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
GUARD = re.compile(r'Guards (?P<doc>[\w./-]+): "(?P<quote>[^"]+)"')

# (doc, quote, test): statements guarded by tests that predate the docstring convention.
GUARDED_ELSEWHERE: tuple[tuple[str, str, str], ...] = (
    (
        "README.md",
        "`POST /-/reload` | reload `config.yaml`; 200 with the outcome, 500 with the reason "
        "on failure; other methods 405",
        "tests/test_http_server.py::test_reload_is_post_only_and_reports_failures",
    ),
    (
        "README.md",
        "other methods 405",
        "tests/test_http_hostile.py::test_methods_pass_auth_first_and_no_version_is_disclosed",
    ),
    (
        "README.md",
        "JSON: `state` (`healthy`, `degraded`, `unhealthy`) and every check with its reason; "
        "200 unless unhealthy (503)",
        "tests/test_http_server.py::test_health_json_and_status_codes",
    ),
    (
        "README.md",
        "Anything else is 404.",
        "tests/test_http_server.py::test_landing_page_and_404",
    ),
    (
        "docs/ingestion.md",
        "so the same bytes moved back with `mv` — same inode, size and mtime — are a new file "
        "and get a fresh set of attempts",
        "tests/integration/test_hostile_files.py::"
        "test_unwritable_outputs_are_retried_not_quarantined_and_mv_back_retries",
    ),
    (
        "alerts/runbook.md",
        "move it back into the capture directory once the cause is fixed: the ledger treats it "
        "as a new attempt",
        "tests/integration/test_hostile_files.py::"
        "test_unwritable_outputs_are_retried_not_quarantined_and_mv_back_retries",
    ),
    (
        "docs/ingestion.md",
        "written to a flow CSV of their own named after the last file of the series with `_end` "
        "before `_Flow.csv`",
        "tests/integration/test_hostile_files.py::test_flows_open_at_the_end_of_a_series_reach_a_csv",
    ),
    (
        "docs/alerting.md",
        "`generatorURL` is `alerting.generator_url` when set, else the daemon's "
        "`--web.external-url`",
        "tests/integration/test_security_alerts.py::"
        "test_benign_role_quiet_port_scan_one_security_alert_replay_held_back",
    ),
    (
        "README.md",
        "503 while starting or stopping, or while the ledger cannot be used (e.g. another "
        "instance holds the state directory)",
        "tests/integration/test_readiness.py::"
        "test_second_instance_on_a_held_state_directory_is_not_ready",
    ),
)


@dataclass(frozen=True)
class Guard:
    doc: str
    quote: str
    test: str  # path::function


def _squash(text: str) -> str:
    return " ".join(text.split())


def docstring_guards() -> list[Guard]:
    """Every guard named in a test function's docstring under tests/."""
    out = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            doc = _squash(ast.get_docstring(node) or "")
            for m in GUARD.finditer(doc):
                test = f"{path.relative_to(ROOT)}::{node.name}"
                out.append(Guard(m["doc"], m["quote"], test))
    return out


def all_guards() -> list[Guard]:
    return docstring_guards() + [Guard(*g) for g in GUARDED_ELSEWHERE]


def _test_exists(test: str) -> bool:
    file, _, name = test.partition("::")
    path = ROOT / file
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
        for n in ast.walk(tree)
    )


def check(guard: Guard) -> None:
    doc = ROOT / guard.doc
    assert doc.is_file(), f"{guard.test} guards {guard.doc}, which does not exist"
    assert _squash(guard.quote) in _squash(doc.read_text(encoding="utf-8")), (
        f"{guard.doc} no longer says {guard.quote!r}; {guard.test} guards it: "
        "update the test and its docstring together with the doc"
    )
    assert _test_exists(guard.test), f"{guard.test} (guarding {guard.doc}) does not exist"


@pytest.mark.parametrize("guard", all_guards(), ids=lambda g: f"{g.doc}:{g.test}")
def test_guarded_sentence_is_still_in_its_doc(guard: Guard) -> None:
    check(guard)


def test_statements_of_behaviour_are_guarded() -> None:
    """The kinds of statement issue 15 asked to keep true each have a guard."""
    guarded = {(g.doc, _squash(g.quote)) for g in all_guards()}
    docs = {doc for doc, _ in guarded}
    assert {"README.md", "alerts/runbook.md"} <= docs, docs
    assert len(guarded) >= 3


def test_a_missing_quote_is_caught() -> None:
    """The check itself: a docstring quoting a sentence a doc does not hold is found."""
    fake = Guard("README.md", "a sentence no doc of ours has ever said", "tests/x.py::t")
    with pytest.raises(AssertionError, match="no longer says"):
        check(fake)
    gone = Guard("README.md", "Anything else is 404.", "tests/test_http_server.py::no_such_test")
    with pytest.raises(AssertionError, match="does not exist"):
        check(gone)
