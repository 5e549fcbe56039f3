"""What a second process adds on this host: the ceiling on N pipeline processes over one.

A fixed pure-Python workload (dict, integer and small-object work: the
interpreter's own hot paths, the kind of work between the pipeline's compiled
kernels) runs in one child process, then in ``processes`` children at once.
Each child times only its work, from a common start instant, and reports its
wall and CPU seconds. On ``processes`` free cores each child takes what the one
took, so ``processes`` of them do ``processes`` times the work in the same
time: a speedup of ``processes``. Cores shared with others (another tenant of
the machine, the broker, SMT siblings) or a shared cache and memory bus show as
more CPU for the same work and a smaller speedup; a pipeline of that many
processes cannot scale better than this over one.

Rounds alternate one child and ``processes`` children; the figures are the
medians over the rounds. ``streamscore bench`` measures it before its phases;
``python -m benchmarks.host [PROCESSES]`` prints it alone.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

# Iterations of the workload: about a second of one core on the bench machine.
DEFAULT_WORK = 4_000_000
ROUNDS = 3
# Children wait for a common start instant this far ahead (interpreter start-up excluded).
START_AHEAD_S = 0.6


@dataclass(frozen=True)
class HostScaling:
    """One child's work alone against ``processes`` children doing it at once (medians)."""

    processes: int
    work: int
    rounds: int
    solo_wall_s: float
    solo_cpu_s: float
    together_wall_s: float  # the slowest child of a round
    together_cpu_s: float  # CPU seconds per child, averaged over the round's children

    @property
    def speedup(self) -> float:
        """Work done per second by the children at once, over one child alone.

        >>> HostScaling(2, 1, 1, 1.0, 1.0, 1.25, 1.2).speedup
        1.6
        """
        return self.processes * self.solo_wall_s / self.together_wall_s

    @property
    def cpu_inflation(self) -> float:
        """CPU seconds a child needs for the work at once, over alone.

        >>> round(HostScaling(2, 1, 1, 1.0, 1.0, 1.25, 1.2).cpu_inflation, 2)
        1.2
        """
        return self.together_cpu_s / self.solo_cpu_s


def workload(n: int) -> int:
    """The fixed work: a dict of small tuples updated and read back, ``n`` steps."""
    table: dict[int, tuple[int, int]] = {}
    total = 0
    for i in range(n):
        key = (i * 2_654_435_761) & 8191
        seen = table.get(key)
        table[key] = (i, key) if seen is None else (seen[0] + 1, i)
        total += len(str(key)) + (seen[0] if seen else 0)
    return total


def measure(processes: int = 2, *, work: int = DEFAULT_WORK, rounds: int = ROUNDS) -> HostScaling:
    """Run the rounds: one child alone, then ``processes`` children at once, alternated."""
    if processes < 2:
        raise ValueError(f"processes must be at least 2, got {processes}")
    solo: list[tuple[float, float]] = []
    together: list[tuple[float, float]] = []
    for _ in range(rounds):
        ((wall, cpu),) = _run_children(1, work)
        solo.append((wall, cpu))
        timings = _run_children(processes, work)
        together.append((max(w for w, _c in timings), statistics.fmean(c for _w, c in timings)))
    return HostScaling(
        processes=processes,
        work=work,
        rounds=rounds,
        solo_wall_s=statistics.median(w for w, _c in solo),
        solo_cpu_s=statistics.median(c for _w, c in solo),
        together_wall_s=statistics.median(w for w, _c in together),
        together_cpu_s=statistics.median(c for _w, c in together),
    )


def line(host: HostScaling) -> str:
    """The figures on one line.

    >>> line(HostScaling(2, 1_000, 3, 1.0, 0.98, 1.25, 1.2))  # doctest: +NORMALIZE_WHITESPACE
    'host: 2 CPU-bound Python processes at once did 1.60x the work of one (each needed 1.22x
    the CPU for the same work; 0.98 s alone), the ceiling on 2 pipeline processes over one'
    """
    n = host.processes
    return (
        f"host: {n} CPU-bound Python processes at once did {host.speedup:.2f}x the work of one "
        f"(each needed {host.cpu_inflation:.2f}x the CPU for the same work; "
        f"{host.solo_cpu_s:.2f} s alone), the ceiling on {n} pipeline processes over one"
    )


def _run_children(count: int, work: int) -> list[tuple[float, float]]:
    """``count`` children doing ``work`` from one start instant: each one's (wall, CPU) seconds."""
    start_at = time.time() + START_AHEAD_S
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.host", str(work), repr(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    out = []
    for child in children:
        stdout, _ = child.communicate(timeout=300)
        if child.returncode != 0:
            raise RuntimeError(f"host scaling child exited with {child.returncode}")
        timing = json.loads(stdout)
        out.append((float(timing["wall_s"]), float(timing["cpu_s"])))
    return out


def _child(work: int, start_at: float) -> None:
    """In a child: wait for the start instant, do the work, print its wall and CPU seconds."""
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    wall, cpu = time.perf_counter(), time.process_time()
    workload(work)
    print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))


if __name__ == "__main__":
    if len(sys.argv) == 3:  # a child of _run_children
        _child(int(sys.argv[1]), float(sys.argv[2]))
    else:  # python -m benchmarks.host [PROCESSES]: the figures alone
        print(line(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2)))
