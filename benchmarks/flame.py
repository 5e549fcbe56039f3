"""Where a real run's time goes: a summary of py-spy's collapsed stacks.

``benchmarks.stages`` times the flow's steps without Kafka; a profile of the
real service (``streamscore run`` against the broker) also shows what those
steps do not: the source and sink, startup, state flushed at the end. py-spy
samples it without changing it and writes collapsed stacks (``-f raw``: one
line a distinct stack, ``frame;frame;... count``); this prints each
function's share of the samples, inclusive (anywhere on the stack) and self
(on top), and with ``--focus`` one function's callers and callees::

    .venv/bin/py-spy record -r 200 -f raw -o run.raw -- \\
        .venv/bin/python -m flows.cli run --until-eof
    .venv/bin/python -m benchmarks.flame run.raw
    .venv/bin/python -m benchmarks.flame run.raw --focus QualityEngine.decisions

A function is named by its qualified name and file (``Class.method
operators/quality.py``), so the lines of one function count together.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Profile:
    """Sample counts by function: inclusive, self, and around one focused function."""

    total: int = 0
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    callers: Counter[str] = field(default_factory=Counter)
    callees: Counter[str] = field(default_factory=Counter)
    focused: int = 0


def function_of(frame: str) -> str:
    """``name (path:line)`` as py-spy writes a frame -> ``name path`` (site-packages cut).

    >>> function_of("decisions (operators/quality.py:125)")
    'decisions operators/quality.py'
    >>> function_of("run (/x/site-packages/onnxruntime/session.py:9)")
    'run onnxruntime/session.py'
    """
    name, _, where = frame.partition(" (")
    path = where.rpartition(":")[0] if ":" in where else where.rstrip(")")
    return f"{name} {path.rpartition('site-packages/')[2]}".strip()


def summarise(lines: Iterable[str], focus: str | None = None) -> Profile:
    """Count the samples of collapsed-stack ``lines``; ``focus`` matches a name's start."""
    profile = Profile()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        names = [function_of(frame) for frame in stack.split(";")]
        profile.total += n
        profile.own[names[-1]] += n
        for name in set(names):
            profile.inclusive[name] += n
        if focus is None:
            continue
        at = next((i for i, name in enumerate(names) if name.startswith(focus)), None)
        if at is not None:
            profile.focused += n
            profile.callers[names[at - 1] if at else "(root)"] += n
            profile.callees[names[at + 1] if at + 1 < len(names) else "(self)"] += n
    return profile


def report(profile: Profile, focus: str | None, top: int) -> str:
    """The summary as text: percentages of all samples."""

    def share(n: int) -> str:
        return f"{100 * n / max(profile.total, 1):5.1f}%"

    out = [f"{profile.total:,} samples"]
    if focus is not None:
        out.append(f"\n{focus}: {share(profile.focused)}")
        out.append("  callers:")
        out += [f"    {share(n)} {name}" for name, n in profile.callers.most_common(top)]
        out.append("  callees:")
        out += [f"    {share(n)} {name}" for name, n in profile.callees.most_common(top)]
        return "\n".join(out)
    out.append("\nself (on top of the stack):")
    out += [f"  {share(n)} {name}" for name, n in profile.own.most_common(top)]
    out.append("\ninclusive (anywhere on the stack):")
    out += [f"  {share(n)} {name}" for name, n in profile.inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flame", description=__doc__)
    parser.add_argument("raw", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--focus", help="a function's qualified name (its start is enough)")
    parser.add_argument("--top", type=int, default=30, help="rows a list (default 30)")
    args = parser.parse_args(argv)
    with args.raw.open(encoding="utf-8") as lines:
        profile = summarise(lines, args.focus)
    print(report(profile, args.focus, args.top))


if __name__ == "__main__":
    main()
