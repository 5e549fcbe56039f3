"""compile_all compiles every cached kernel of the project, so a first start only loads them."""

from __future__ import annotations

import subprocess
import sys

# In a fresh interpreter: kernels this test process compiled would hide one left out.
_CHECK = """
import importlib, pkgutil
import operators
from numba.core.caching import FunctionCache
from numba.core.registry import CPUDispatcher
from operators.numba_cache import compile_all

compile_all()
kernels = {}
for info in pkgutil.iter_modules(operators.__path__):
    module = importlib.import_module(f"operators.{info.name}")
    for name, obj in vars(module).items():
        if isinstance(obj, CPUDispatcher) and isinstance(obj._cache, FunctionCache):
            kernels[f"{module.__name__}.{name}"] = len(obj.signatures)
print(sorted(kernels.items()))
assert len(kernels) >= 12, kernels
assert all(kernels.values()), [k for k, n in kernels.items() if not n]
"""


def test_compile_all_leaves_no_cached_kernel_uncompiled() -> None:
    done = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
