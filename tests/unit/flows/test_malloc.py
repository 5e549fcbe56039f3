"""The allocator tuning: batch-sized blocks are reused rather than faulted in afresh."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.malloc import operator_tuned, tune_malloc

# Pickles a 240 KB payload (a batch's feature matrix, as a cluster sends it) 200
# times; prints the minor page faults that took.
_CHURN = """
import pickle, resource, sys
from flows.malloc import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
payload = bytes(240_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    pickle.dumps(payload, protocol=5)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(
    not hasattr(os, "confstr") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt is glibc's",
)


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@glibc_only
def test_tuned_process_reuses_freed_batch_sized_blocks() -> None:
    # Untuned, every pickle's buffer is fresh memory: about 60 page faults each
    # (12,000 in all). Tuned, the first pickle's pages are reused by the others.
    untuned, tuned = _faults("untuned"), _faults("tuned")
    assert untuned > 200 * 40
    assert tuned < 1_000


@glibc_only
def test_operator_tuning_stands() -> None:
    assert not tune_malloc({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})


def test_operator_tuning_is_recognised() -> None:
    assert operator_tuned({}) is None
    assert operator_tuned({"MALLOC_TRIM_THRESHOLD_": "1"}) == "MALLOC_TRIM_THRESHOLD_"
    assert operator_tuned({"MALLOC_ARENA_MAX": "2"}) == "MALLOC_ARENA_MAX"
    assert operator_tuned({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) is None
