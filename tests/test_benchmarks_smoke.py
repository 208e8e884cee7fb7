"""The benchmark suite: --quick mode runs end to end and reports every system; its baseline is right.

No timing is asserted.  The suite's numbers only mean something if the numpy
baseline computes the gradients tinygrad_rnn's autograd computes on the same
weights and data, so that is checked here (float64, 1e-10) for every
tinygrad_rnn system, compiled, expanded and traced; the PyTorch systems must compute the
baseline's gradients too.  Also: the baseline's own gradient check passes and
catches a small error, bad arguments are refused, and the fresh-process memory
measurement works.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import numpy_bptt  # noqa: E402
import systems  # noqa: E402

TG_SYSTEMS = [systems.TinygradRNNCell, systems.TinygradCustomCell,
              systems.TinygradCustomCellComposite, systems.TinygradRNNCellExpanded]


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_mode_reports_every_system(tmp_path):
    out = tmp_path / "quick.json"
    r = subprocess.run([sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--dtype", "float64",
                        "--repeats", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    expected = [c.key for c in systems.ALL if _have_torch() or c.key not in systems.TORCH_SYSTEMS]
    assert len(expected) >= 5
    # the summary table: a header naming every system, then one ratio per system for each workload
    lines = r.stdout.splitlines()
    head = lines.index("summary, float64: median time per step / numpy baseline's (same run)")
    header = lines[head + 1].split()
    assert header == ["workload"] + expected
    for i, name in enumerate(("W1", "W2", "W3", "W4")):
        row = lines[head + 2 + i].split()
        assert row[0] == name and len(row) == 1 + len(expected) and row[1] == "1.00x", row
        assert all(c.endswith("x") and float(c[:-1]) > 0 for c in row[1:]), row
    if not _have_torch():
        assert "torch is not installed" in r.stdout
    # machine header
    assert r.stdout.startswith("machine: ") and "OPENBLAS_NUM_THREADS=1" in r.stdout
    res = json.loads(out.read_text())
    for name in ("W1", "W2", "W3", "W4"):
        assert list(res["timing_by_dtype"]["float64"][name]) == expected
    assert set(res["memory"]["float64"]) == set(expected)
    assert res["perop"]["results"]["tinygrad_rnn forward + backward"]["median_us"] > 0
    # the plot and the tables read that file
    md = subprocess.run([sys.executable, os.path.join(BENCH, "plot.py"), str(out), "--markdown"],
                        capture_output=True, text=True, timeout=60)
    assert md.returncode == 0, md.stderr
    assert "| W4 | float64 | 1.00x | " in md.stdout


def _weights_and_batch(V, D, H, B, T, seed):
    w = numpy_bptt.make_weights(V, D, H, np.float64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    w = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in w.items()}   # biases off zero
    xs, ts = numpy_bptt.make_data(V, B, T, seed=seed + 2)
    xs[0, : min(3, T)] = 1          # a repeated token: its embedding row must collect every use
    return w, xs, ts


@pytest.mark.parametrize("system", TG_SYSTEMS, ids=lambda c: c.key)
@pytest.mark.parametrize("sizes", [(9, 4, 6, 3, 7), (5, 3, 4, 1, 2)], ids=["B3T7", "B1T2"])
def test_baseline_gradients_equal_tinygrad_autograd(system, sizes):
    """Three SGD steps on the same float64 weights: every loss and gradient agrees to 1e-10."""
    w, xs, ts = _weights_and_batch(*sizes, seed=11)
    base, auto = systems.NumpyBaseline(w, xs, ts), system(w, xs, ts)
    for step in range(3):
        lb, la = base.step(), auto.step()
        assert abs(lb - la) <= 1e-10, (step, lb, la)
        gb, ga = base.grads(), auto.grads()
        assert set(gb) == set(ga) == set(numpy_bptt.PARAM_NAMES)
        for k in gb:
            assert ga[k].dtype == np.float64
            np.testing.assert_allclose(ga[k], gb[k], rtol=1e-10, atol=1e-10, err_msg=f"step {step}, {k}")
    # the updates agree too: after three steps both hold the same weights
    ours = dict(zip(numpy_bptt.PARAM_NAMES, base.model.params))
    theirs = {k: (auto.named[k] if hasattr(auto, "named") else auto.p[k]).data for k in ours}
    for k in ours:
        np.testing.assert_allclose(theirs[k], ours[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_float32_systems_stay_float32():
    w = numpy_bptt.make_weights(7, 3, 5, np.float32, seed=0)
    xs, ts = numpy_bptt.make_data(7, 2, 4, seed=1)
    base = systems.NumpyBaseline(w, xs, ts)
    lb = base.step()
    for cls in TG_SYSTEMS:
        s = cls(w, xs, ts)
        assert abs(s.step() - lb) <= 1e-5
        assert all(g.dtype == np.float32 for g in s.grads().values()), cls.key
    assert all(g.dtype == np.float32 for g in base.grads().values())


def test_unknown_system_is_refused():
    with pytest.raises(ValueError, match="nope"):
        systems.available(["numpy", "nope"])


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


def test_compare_times_two_versions_in_turns():
    """benchmarks/compare.py runs a commit's package beside the working tree's and prints their ratio."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = subprocess.run([sys.executable, os.path.join(BENCH, "compare.py"), "--before", "HEAD", "--rounds", "2",
                          "--sample-s", "0.05", "--cases", "perop,W1/tg_rnncell"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[2:]}
    assert set(rows) == {"perop", "W1/tg_rnncell"}
    for row in rows.values():
        before, after, ratio = float(row[1]), float(row[3]), float(row[5])
        # the printed times are rounded to 3 decimals, the ratio is taken before rounding
        assert before > 0 and after > 0 and abs(ratio - after / before) <= 0.01 * ratio + 5e-4
    bad = subprocess.run([sys.executable, os.path.join(BENCH, "compare.py")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--before is required" in bad.stderr
    bad = subprocess.run([sys.executable, os.path.join(BENCH, "compare.py"), "--before", "HEAD", "--cases", "W9/x"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown case 'W9/x'" in bad.stderr
