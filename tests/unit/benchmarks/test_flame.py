"""benchmarks.flame: shares of py-spy's collapsed stacks."""

from __future__ import annotations

from benchmarks.flame import report, summarise

RAW = [
    "main (flows/cli.py:10);on_batch (operators/windows.py:5);step (operators/card.py:3) 6\n",
    "main (flows/cli.py:10);on_batch (operators/windows.py:7) 2\n",
    "main (flows/cli.py:11);decisions (operators/quality.py:1);get (state/rocksdb.py:2) 2\n",
    "not a stack line\n",
]


def test_shares_count_a_function_once_a_stack_whatever_its_line() -> None:
    profile = summarise(RAW)
    assert profile.total == 10
    assert profile.inclusive["main flows/cli.py"] == 10
    assert profile.inclusive["on_batch operators/windows.py"] == 8
    assert profile.own["on_batch operators/windows.py"] == 2
    assert profile.own["step operators/card.py"] == 6


def test_focus_gives_callers_and_callees() -> None:
    profile = summarise(RAW, "on_batch")
    assert profile.focused == 8
    assert profile.callers == {"main flows/cli.py": 8}
    assert profile.callees == {"step operators/card.py": 6, "(self)": 2}
    text = report(profile, "on_batch", 5)
    assert " 60.0% step operators/card.py" in text
    assert " 80.0%" in text.splitlines()[2]
