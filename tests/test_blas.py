"""Setting numpy's BLAS thread count (a speed setting the command line applies)."""
import numpy as np
import pytest

from tinygrad_rnn.blas import blas_threads, limit_blas_threads


def test_limit_blas_threads_sets_the_count_it_reports():
    before = blas_threads()
    if before is None:
        pytest.skip("this numpy's BLAS thread count cannot be read here")
    try:
        assert limit_blas_threads(1) is True
        assert blas_threads() == 1
        a = np.arange(12.0).reshape(3, 4)
        np.testing.assert_array_equal(a @ a.T, np.einsum("ij,kj->ik", a, a))   # BLAS still right
    finally:
        limit_blas_threads(before)
    assert blas_threads() == before
