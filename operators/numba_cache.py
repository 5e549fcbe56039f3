"""The project's numba kernels: compiled with an on-disk cache, and compiled before serving.

numba caches a kernel's machine code beside its module, or, where that is
read-only, in ``NUMBA_CACHE_DIR`` or the user's cache directory; where nothing
is writable the kernel still compiles, in memory at every start. Each kernel
module compiles its kernels for the argument types it passes when the flow is
built (:func:`compile_each`), so no record waits for a compile.

Time rules and state: none.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from numba import njit
from numba.core.errors import NumbaWarning


def jit(fn: Callable[..., Any]) -> Any:
    """``fn`` compiled by numba, cached on disk where some cache directory is writable."""
    try:
        return njit(cache=True)(fn)
    except RuntimeError:  # numba found no writable place for a cache ("no locator available")
        return njit(cache=False)(fn)


def compile_all() -> None:
    """Compile (or load from numba's cache) every kernel of the project: what the bootstrap
    script and the image build run, so a first start loads them instead of compiling."""
    # Imported here: the kernel modules import this one.
    from operators import card_kernel, drift_kernel, json_fill, merchant_kernel

    card_kernel.compile_kernels()
    drift_kernel.compile_kernels()
    merchant_kernel.compile_kernel()
    json_fill.compile_kernel()


def compile_each(kernels: Iterable[tuple[Any, Any]]) -> None:
    """Compile (or load from numba's cache) each ``(kernel, signature)``."""
    with warnings.catch_warnings():
        # A cache that cannot be written (a read-only tree) is a warning, not a failure.
        warnings.simplefilter("ignore", NumbaWarning)
        for kernel, signature in kernels:
            kernel.compile(signature)
