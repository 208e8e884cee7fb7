"""The benchmark suite keeps running, and its numpy baseline keeps computing the right gradients.

No timing is asserted: only that the suite runs end to end at tiny sizes and
writes what it promises, and that the hand-written baseline it measures
against agrees with autograd and with finite differences.
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


def _timing(res, workload, dtype):
    """Timings of one workload and dtype, whichever way round the JSON nests them."""
    if "timing_by_dtype" in res:
        return res["timing_by_dtype"][dtype][workload]
    return res["timing"][workload][dtype]


def test_quick_suite_runs_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--dtype", "float64",
                        "--repeats", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    meta = res["meta"]
    for key in ("date", "commit", "cpu", "cores", "numpy", "blas", "thread_env"):
        assert key in meta
    assert meta["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"
    expected = {"numpy", "tg_rnncell", "tg_custom"}
    for name in ("W1", "W2", "W3", "W4"):
        timing = _timing(res, name, "float64")
        assert expected <= set(timing)
        assert timing["numpy"]["ratio"] == 1.0
        for v in timing.values():
            assert 0 < v["min_s"] <= v["median_s"] <= v["max_s"]
    mem = res["memory"]["float64"]
    assert mem["numpy"]["traced_peak_bytes"] > 0 and mem["tg_custom"]["traced_peak_bytes"] > 0
    perop = res["perop"]["results"]
    for who in ("numpy", "tinygrad_rnn"):
        rows = [v for k, v in perop.items() if k.startswith(who)]
        assert rows and all(v["median_us"] > 0 for v in rows), (who, perop)
    assert "W1 textbook toy" in r.stdout

    # the tables and the plot of docs/benchmarks.md come from the same file
    md = subprocess.run([sys.executable, os.path.join(BENCH, "plot.py"), str(out), "--markdown"],
                        capture_output=True, text=True, timeout=60)
    assert md.returncode == 0, md.stderr
    assert "| W4 | float64 | 1.00x |" in md.stdout and meta["commit"][:10] in md.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    png = tmp_path / "plot.png"
    pl = subprocess.run([sys.executable, os.path.join(BENCH, "plot.py"), str(out), "--png", str(png)],
                        capture_output=True, text=True, timeout=120)
    assert pl.returncode == 0, pl.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_refused():
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--workloads", "W9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "W9" in r.stderr


def test_memory_child_reports_growth():
    sizes = json.dumps({"V": 7, "D": 3, "H": 5, "B": 2, "T": 40})
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--memory-child", "numpy", "float64", sizes],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["rss_growth_bytes"] >= 0


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


@pytest.mark.parametrize("system", [systems.TinygradRNNCell, systems.TinygradCustomCell])
def test_baseline_gradients_equal_autograd(system):
    """Same float64 weights and batch: the hand-derived BPTT and tinygrad_rnn's autograd agree to 1e-10."""
    V, D, H, B, T = 9, 4, 6, 3, 7
    w = numpy_bptt.make_weights(V, D, H, np.float64, seed=3)
    rng = np.random.default_rng(4)
    w = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in w.items()}   # no zero biases
    xs, ts = numpy_bptt.make_data(V, B, T, seed=5)
    xs[0, :3] = 2          # a repeated token: its embedding gradient must accumulate
    base, auto = systems.NumpyBaseline(w, xs, ts), system(w, xs, ts)
    assert abs(base.step() - auto.step()) <= 1e-10
    gb, ga = base.grads(), auto.grads()
    assert set(gb) == set(ga) == set(numpy_bptt.PARAM_NAMES)
    for k in gb:
        np.testing.assert_allclose(ga[k], gb[k], rtol=1e-10, atol=1e-12, err_msg=k)
    # after the SGD step both hold the same weights
    after = dict(zip(numpy_bptt.PARAM_NAMES, base.model.params))
    updated = {k: w[k] - systems.LR * gb[k] for k in gb}
    for k in gb:
        np.testing.assert_allclose(after[k], updated[k], rtol=1e-12, atol=1e-14, err_msg=k)


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
