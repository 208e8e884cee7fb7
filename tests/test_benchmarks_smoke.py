"""The benchmark suite's baseline and plumbing, beside test_benchmarks_quick.py (which runs --quick).

No timing is asserted.  Here: the numpy baseline's own gradient check passes
and catches a small error, the PyTorch systems compute the baseline's
gradients (so their timings compare the same work), bad arguments are refused,
and the fresh-process memory measurement works.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

import numpy_bptt  # noqa: E402
import systems  # noqa: E402


def test_bad_arguments_are_refused():
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--workloads", "W9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "W9" in r.stderr


def test_memory_child_sees_the_step_allocate():
    # one float64 step at B=8, T=500, H=64 keeps several (T, B, H) arrays of 2 MiB alive at once
    sizes = json.dumps({"V": 50, "D": 32, "H": 64, "B": 8, "T": 500})
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--memory-child", "numpy", "float64", sizes],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["rss_growth_bytes"] >= 2 * 2 ** 20


def test_baseline_gradients_match_central_differences():
    assert numpy_bptt.gradient_check() < 1.0


def test_gradient_check_catches_a_wrong_backward(monkeypatch):
    # a recurrent-weight gradient off by 0.1 %: the check must notice
    right = numpy_bptt.TimeRNN.backward

    def slightly_wrong(self, *args, **kwargs):
        out = right(self, *args, **kwargs)
        self.grads[1] *= 1.001
        return out

    monkeypatch.setattr(numpy_bptt.TimeRNN, "backward", slightly_wrong)
    with pytest.raises(AssertionError, match="Wh"):
        numpy_bptt.gradient_check()


def test_torch_systems_agree_with_the_baseline():
    pytest.importorskip("torch")
    V, D, H, B, T = 9, 4, 6, 3, 7
    w = numpy_bptt.make_weights(V, D, H, np.float64, seed=3)
    xs, ts = numpy_bptt.make_data(V, B, T, seed=5)
    base = systems.NumpyBaseline(w, xs, ts)
    base.step()
    for cls in (systems.TorchLoop, systems.TorchFused):
        s = cls(w, xs, ts)
        s.step()
        for k, g in s.grads().items():
            np.testing.assert_allclose(g, base.grads()[k], rtol=1e-10, atol=1e-12, err_msg=f"{cls.key} {k}")
