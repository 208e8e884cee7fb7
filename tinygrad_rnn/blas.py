"""How many threads numpy's BLAS uses: a speed setting for small recurrent models, kept apart."""
import ctypes
import glob
import os

import numpy as np

__all__ = ["limit_blas_threads", "blas_threads"]

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
            "openblas_get_num_threads64_", "openblas_get_num_threads")


def _openblas_call(symbols, *args):
    """Call the first of ``symbols`` found in the OpenBLAS that numpy's wheels ship; None if none is."""
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "*openblas*")):
        try:
            lib = ctypes.CDLL(path)   # the library numpy already loaded: same handle
        except OSError:
            continue
        for symbol in symbols:
            function = getattr(lib, symbol, None)
            if function is not None:
                return function(*args)
    return None


def limit_blas_threads(n):
    """Ask numpy's BLAS to use ``n`` threads; True if it could (best effort, never an error).

    The matrices of a small recurrent model are tiny, and BLAS threads that spin
    while waiting for a busy core can make each step many times slower on a
    loaded machine; one thread is the safe choice for this workload.  Uses
    threadpoolctl when it is installed, otherwise the OpenBLAS that numpy's
    wheels ship.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(int(n), user_api="blas")
        return True
    if _openblas_call(_GETTERS) is None:
        return False
    _openblas_call(_SETTERS, int(n))
    return True


def blas_threads():
    """The number of threads numpy's OpenBLAS uses now, or None when that cannot be read."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return _openblas_call(_GETTERS)
    counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
    return counts[0] if counts else None
