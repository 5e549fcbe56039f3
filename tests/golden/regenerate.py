"""Regenerate the golden fixture from the pinned commit, or show its records.

    .venv/bin/python -m tests.golden.regenerate            # rewrite tests/golden/outputs.npz
    .venv/bin/python -m tests.golden.regenerate --show "score transactions#0@17"

Both check out ``PINNED`` (the engine whose outputs are the reference) into a
temporary ``git worktree``, copy this folder's modules into it and run them
there with this interpreter, so the reference engine meets today's generator
and runner. ``--here`` runs in this checkout instead (what the worktree run
calls; also a quick way to see what the current code emits).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent
ROOT = GOLDEN.parents[1]
# The commit whose outputs the fixture holds: main before the columnar engine (issue #23).
PINNED = "e3d06e8"


def run_here() -> tuple[Any, dict[str, Any]]:
    """The canonical outputs of this checkout's engine and a header describing the run."""
    from tests.golden.canonical import Canonical, canonicalize
    from tests.golden.inputs import generate
    from tests.golden.runner import run_flow

    started = time.perf_counter()
    inputs = generate()
    generated = time.perf_counter()
    canonical: Canonical = canonicalize(run_flow(inputs))
    finished = time.perf_counter()
    kinds: dict[str, int] = {}
    for key in canonical.records:
        kind = key.partition(" ")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    meta = {
        "inputs": inputs.digest(),
        "input_records": inputs.count(),
        "records": kinds,
        "counted": dict(sorted(canonical.counted.items())),
        "repeated": len(canonical.repeated),
    }
    print(
        f"generated {inputs.count():,} records in {generated - started:.1f} s, "
        f"ran the flow and canonicalized in {finished - generated:.1f} s",
        file=sys.stderr,
    )
    return canonical, meta


@contextmanager
def pinned_checkout(commit: str = PINNED) -> Iterator[Path]:
    """A temporary worktree of ``commit`` holding this folder's modules; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="streamscore-pinned-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), commit],
            check=True,
        )
        try:
            target = tree / "tests" / "golden"
            target.mkdir(parents=True, exist_ok=True)
            for module in GOLDEN.glob("*.py"):
                shutil.copy2(module, target / module.name)
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )


def run_pinned(args: list[str], commit: str = PINNED) -> str:
    """Run this module with ``--here`` and ``args`` in a worktree of ``commit``; its stdout."""
    with pinned_checkout(commit) as tree:
        done = subprocess.run(
            [sys.executable, "-m", "tests.golden.regenerate", "--here", *args],
            cwd=tree,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
    return done.stdout


def pinned_records(keys: list[str], commit: str = PINNED) -> dict[str, str]:
    """The pinned engine's canonical records of ``keys`` (absent ones left out)."""
    return dict(json.loads(run_pinned(["--show", *keys], commit)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--here", action="store_true", help="run this checkout's engine")
    parser.add_argument("--commit", default=PINNED, help="the reference commit (not with --here)")
    parser.add_argument("--out", type=Path, help="where to write the fixture")
    parser.add_argument("--show", nargs="+", metavar="IDENTITY", help="print these records")
    args = parser.parse_args(argv)
    from tests.golden.canonical import FIXTURE, write_fixture

    out = (args.out or FIXTURE).resolve()
    if not args.here:
        extra = ["--show", *args.show] if args.show else ["--out", str(out)]
        print(run_pinned(extra, args.commit), end="")
        return 0
    canonical, meta = run_here()
    if args.show:
        found = {k: canonical.records[k].decode() for k in args.show if k in canonical.records}
        print(json.dumps(found))
        return 0
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    write_fixture(out, canonical, {**meta, "commit": commit})
    print(f"wrote {out} ({out.stat().st_size:,} bytes): {json.dumps(meta)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
