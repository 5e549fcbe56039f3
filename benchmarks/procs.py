"""Child processes of a benchmark run: spawned, their peak RSS polled, always stopped.

Peak RSS is ``VmHWM`` from ``/proc/<pid>/status`` (the kernel's high-water
mark of the resident set), read every ``poll_s`` by one background thread
while the child lives; the last reading before it exits is its peak. CPU
time (user + system, ``/proc/<pid>/stat``) is read the same way.
:class:`Children` stops every child still running when it closes (SIGINT,
then SIGKILL after a grace period), so an error or Ctrl-C never leaves a
pipeline behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO


def parse_vm_hwm_kib(status: str) -> int | None:
    """The ``VmHWM`` line of a ``/proc/<pid>/status`` text, in KiB; None when absent.

    >>> parse_vm_hwm_kib("Name:\\tpython\\nVmHWM:\\t  123456 kB\\nVmRSS:\\t 1 kB\\n")
    123456
    """
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def parse_cpu_ticks(stat: str) -> int:
    """User + system CPU time, in clock ticks, from a ``/proc/<pid>/stat`` line.

    >>> parse_cpu_ticks("42 (py thon) R 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0")
    175
    """
    # The command name may hold spaces and parentheses: count fields after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def read_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used so far, or None once it is gone."""
    try:
        ticks = parse_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def parse_host_busy_ticks(stat: str) -> int:
    """Busy clock ticks of every CPU together, from the ``cpu`` line of ``/proc/stat``.

    Busy is every state but idle and iowait (user, nice, system, irq, softirq, steal).

    >>> parse_host_busy_ticks("cpu  100 5 50 1000 20 3 2 1 0 0\\ncpu0 1 2 3 4")
    161
    """
    fields = [int(f) for f in stat.split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4]


def read_host_busy_s() -> float:
    """CPU seconds the whole host has been busy since boot (0.0 where /proc/stat is absent)."""
    try:
        ticks = parse_host_busy_ticks(Path("/proc/stat").read_text())
    except (OSError, ValueError, IndexError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def read_vm_hwm_kib(pid: int) -> int | None:
    """Peak RSS of a live process in KiB, or None once it is gone (or on non-Linux)."""
    try:
        return parse_vm_hwm_kib(Path(f"/proc/{pid}/status").read_text())
    except (OSError, ValueError, IndexError):
        return None


class Children:
    """Subprocesses with polled peak RSS; every one still alive is stopped on close."""

    def __init__(self, *, poll_s: float = 0.1) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._peaks: dict[int, int] = {}
        self._cpu: dict[int, float] = {}
        self._logs: dict[int, IO[bytes]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._poll_s = poll_s
        self._poller = threading.Thread(target=self._poll, name="rss-poller", daemon=True)
        self._poller.start()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
        capture_stdout: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a child; stderr (and stdout unless captured) go to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = log.open("ab")
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else sink,
            stderr=sink,
        )
        with self._lock:
            self._procs.append(proc)
            self._logs[proc.pid] = sink
        self._sample(proc)
        return proc

    def peak_rss_mib(self, proc: subprocess.Popen[bytes]) -> float:
        """The highest ``VmHWM`` seen for ``proc``, in MiB (0 if never read)."""
        self._sample(proc)
        with self._lock:
            return self._peaks.get(proc.pid, 0) / 1024

    def cpu_s(self, proc: subprocess.Popen[bytes]) -> float:
        """CPU seconds ``proc`` used, as last read while it lived (0 if never read)."""
        self._sample(proc)
        with self._lock:
            return self._cpu.get(proc.pid, 0.0)

    def stop(self, proc: subprocess.Popen[bytes], *, grace_s: float = 20.0) -> int:
        """SIGINT (the flow finishes its epoch and exits), then SIGKILL after ``grace_s``."""
        self._sample(proc)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._release(proc)
        return proc.returncode

    def wait(self, proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for ``proc`` to exit; its return code, or None."""
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._release(proc)
        return code

    def close(self) -> None:
        """Stop every child still running (all signalled first, then waited for)."""
        with self._lock:
            alive = [p for p in self._procs if p.poll() is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            self._release(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        self._closed.set()
        self._poller.join(timeout=2)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _release(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            sink = self._logs.pop(proc.pid, None)
        if sink is not None:
            sink.close()

    def _sample(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        kib, cpu = read_vm_hwm_kib(proc.pid), read_cpu_s(proc.pid)
        with self._lock:
            if kib is not None:
                self._peaks[proc.pid] = max(kib, self._peaks.get(proc.pid, 0))
            if cpu is not None:
                self._cpu[proc.pid] = max(cpu, self._cpu.get(proc.pid, 0.0))

    def _poll(self) -> None:
        while not self._closed.wait(self._poll_s):
            with self._lock:
                alive = [p for p in self._procs if p.returncode is None]
            for proc in alive:
                self._sample(proc)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return os.linesep.join(text.splitlines()[-lines:])
