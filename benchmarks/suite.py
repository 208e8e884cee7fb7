"""The benchmark suite itself; ``run.py`` pins the threads and then calls ``run(args)``.

Timing: after warm-up, each sample is the mean time of enough consecutive
training steps to last about ``SAMPLE_S`` (one step when a step is longer), and
the systems take turns sample by sample (in a rotating order), so a slow
patch of the machine hits them all alike.  The reported time is the median
sample, with min and max; the ratio is the system's median over the numpy
baseline's median from the same run.  Python's garbage collector runs as it
would in a user's program, but is emptied before each sample, and the objects
alive after set-up (torch's modules among them) are frozen out of its reach.
"""
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import baseline_numpy
import systems as systems_mod

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
_torch = getattr(systems_mod, "torch_module", None) or getattr(systems_mod, "_torch")

# Workload sizes: (V, D, H, B, T)
FULL = {
    "W1": dict(V=4, D=4, H=6, B=1, T=4, title="textbook toy"),
    "W2": dict(V=418, D=100, H=100, B=10, T=5, title="DLFS2 small PTB settings"),
    "W3": dict(V=2000, D=256, H=256, B=32, T=35, title="medium"),
    "W4": dict(V=50, D=32, H=64, B=8, T=2000, title="long"),
}
QUICK = {
    "W1": FULL["W1"],
    "W2": FULL["W2"],
    "W3": dict(V=200, D=32, H=32, B=4, T=8, title="medium (quick size)"),
    "W4": dict(V=50, D=32, H=64, B=8, T=60, title="long (quick size)"),
}
TIMED = ("W1", "W2", "W3", "W4")


# ---------------------------------------------------------------------------- machine
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*cmd):
    try:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _blas_info():
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {"name": blas.get("name"), "version": blas.get("version"),
                "config": blas.get("openblas configuration")}
    except Exception as e:   # the layout of show_config is numpy's, not ours
        return {"error": repr(e)}


def _threadpools():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
            for d in threadpoolctl.threadpool_info()]


def machine_info(threads):
    torch = _torch()
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--", "tinygrad_rnn")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "commit_short": commit[:10],
        "engine_uncommitted_changes": bool(dirty),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas_info(),
        "threads_requested": threads or "environment",
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "threadpools": _threadpools(),
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
    }


def machine_line(m):
    blas = m["blas"]
    return (f"{m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, numpy {m['numpy']} "
            f"({blas.get('name')} {blas.get('version')}), torch {m['torch'] or 'not installed'}; "
            f"threads {m['thread_env'].get('OPENBLAS_NUM_THREADS') or 'default'}")


def blas_peak(dtype, n, repeats=5):
    """GFLOP/s of an n x n matrix product: this machine's BLAS peak, for the W3 efficiency figure."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def step_flops(V, D, H, B, T, **_):
    """Matrix-product FLOPs of one training step: forward, and twice that in backward."""
    return 3 * 2 * B * T * (D * H + H * H + H * V)


# ---------------------------------------------------------------------------- timing
def _sample(step, inner):
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(inner):
        step()
    return (time.perf_counter() - t0) / inner


def _build(classes, sizes, dtype, seed=0):
    w = baseline_numpy.make_weights(sizes["V"], sizes["D"], sizes["H"], dtype, seed)
    xs, ts = baseline_numpy.make_data(sizes["V"], sizes["B"], sizes["T"], seed + 1)
    built = {cls.key: cls(w, xs, ts) for cls in classes}
    _freeze()
    return built


def _freeze():
    """Move every object alive now out of the collector's reach.

    Importing torch leaves hundreds of thousands of long-lived objects; without
    this, each full collection during a step would walk them all and charge a
    numpy-only system for torch being loaded in the same process.
    """
    gc.collect()
    gc.freeze()


def _check_losses(built, dtype, where):
    """Every system must compute the baseline's loss: otherwise the timings compare different work."""
    losses = {k: s.step() for k, s in built.items()}
    ref = losses["numpy"]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for k, loss in losses.items():
        if not abs(loss - ref) <= tol * max(1.0, abs(ref)):
            raise RuntimeError(f"{where}: {k} computes loss {loss!r}, the numpy baseline {ref!r}")
    return losses


def time_systems(classes, sizes, dtype, repeats, sample_s, where):
    built = _build(classes, sizes, dtype)
    _check_losses(built, dtype, where)          # also the first warm-up step
    inner = {}
    for k, s in built.items():                  # second warm-up step, which also sizes the samples
        t = _sample(s.step, 1)
        inner[k] = max(1, int(sample_s / max(t, 1e-9)))
    samples = {k: [] for k in built}
    keys = list(built)
    for r in range(repeats):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            samples[k].append(_sample(built[k].step, inner[k]))
    out = {}
    for k, xs in samples.items():
        out[k] = {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs),
                  "samples_s": xs, "steps_per_sample": inner[k]}
    base, base_min = out["numpy"]["median_s"], out["numpy"]["min_s"]
    for v in out.values():
        v["ratio"] = v["median_s"] / base
        v["ratio_of_min"] = v["min_s"] / base_min   # less sensitive to a busy machine than the median
    return out


# ---------------------------------------------------------------------------- memory
def traced_peak(system):
    """Peak bytes traced by tracemalloc (numpy buffers and Python objects) during one step, above the start."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        system.step()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def memory_child(key, dtype, sizes, threads):
    """In a fresh process: how far one training step lifts the resident set above its level before it (printed).

    One step runs first, so that lazily allocated buffers (BLAS workspaces,
    allocator pools) count as already there; the kernel's high-water mark is then
    reset (``/proc/self/clear_refs``) and read after the measured step.
    """
    sizes = json.loads(sizes)
    cls = {c.key: c for c in systems_mod.ALL}[key]
    if key in systems_mod.TORCH_SYSTEMS and threads:
        _torch().set_num_threads(threads)
    (system,) = _build([cls], sizes, np.dtype(dtype)).values()
    system.step()
    gc.collect()
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")          # resets VmHWM to the current resident set
    system.step()
    peak = _status_bytes("VmHWM")
    print(json.dumps({"rss_growth_bytes": max(0, peak - before)}))
    return 0


def rss_growth(key, dtype, sizes, threads):
    if not os.access("/proc/self/clear_refs", os.W_OK):
        return None   # Linux only: the high-water mark cannot be reset elsewhere
    cmd = [sys.executable, os.path.join(HERE, "run.py"), "--threads", str(threads),
           "--memory-child", key, dtype, json.dumps(sizes)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"memory measurement of {key} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])["rss_growth_bytes"]


def measure_memory(classes, sizes, dtype, threads, rss=True):
    out = {}
    built = _build(classes, sizes, dtype)
    for k, s in built.items():
        traced = None if k in systems_mod.TORCH_SYSTEMS else traced_peak(s)
        out[k] = {"traced_peak_bytes": traced,
                  "rss_growth_bytes": rss_growth(k, np.dtype(dtype).name, sizes, threads) if rss else None}
    for field in ("traced_peak_bytes", "rss_growth_bytes"):
        base = out["numpy"][field]
        for v in out.values():
            v[field.replace("_bytes", "_ratio")] = (v[field] / base if v[field] is not None and base else None)
    return out


# ---------------------------------------------------------------------------- per-op overhead
def perop(n_ops, repeats, sample_s, have_torch):
    """Forward + backward of a chain of n_ops elementwise ops (alternately * a and + c) on (10, 10) float64.

    ``x`` requires grad, the operands ``a`` and ``c`` are constants.  numpy's own
    cost is the same chain of forward ops, and forward plus the hand-written
    backward (``g = g * a`` for each product; a sum passes ``g`` through).
    """
    from tinygrad_rnn import Tensor
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((10, 10))
    a = 1 + 1e-3 * rng.standard_normal((10, 10))
    c = 1e-3 * rng.standard_normal((10, 10))

    def np_forward():
        y = x0
        for i in range(n_ops):
            y = y * a if i % 2 == 0 else y + c
        return y

    def np_forward_backward():
        np_forward()
        g = np.ones_like(x0)
        for i in reversed(range(n_ops)):
            if i % 2 == 0:
                g = g * a
        return g

    ta, tc = Tensor(a), Tensor(c)

    def tg_forward():
        x = Tensor(x0, requires_grad=True)
        y = x
        for i in range(n_ops):
            y = y * ta if i % 2 == 0 else y + tc
        return x, y.sum()

    def tg_forward_backward():
        x, loss = tg_forward()
        loss.backward()
        return x.grad

    cases = {"numpy_forward": np_forward, "numpy_forward_hand_backward": np_forward_backward,
             "tinygrad_rnn_forward": tg_forward, "tinygrad_rnn_forward_backward": tg_forward_backward}
    if have_torch:
        import torch
        xa, xc, xt0 = torch.from_numpy(a), torch.from_numpy(c), torch.from_numpy(x0)

        def torch_forward():
            x = xt0.clone().requires_grad_(True)
            y = x
            for i in range(n_ops):
                y = y * xa if i % 2 == 0 else y + xc
            return x, y.sum()

        def torch_forward_backward():
            x, loss = torch_forward()
            loss.backward()
            return x.grad

        cases["torch_forward"] = torch_forward
        cases["torch_forward_backward"] = torch_forward_backward
    # the three gradients must agree before their cost is compared
    ref = np_forward_backward()
    np.testing.assert_allclose(tg_forward_backward(), ref, rtol=1e-12)
    _freeze()
    if have_torch:
        np.testing.assert_allclose(torch_forward_backward().numpy(), ref, rtol=1e-12)
    inner = {k: max(1, int(sample_s / max(_sample(f, 1), 1e-9))) for k, f in cases.items()}
    samples = {k: [] for k in cases}
    for _ in range(repeats):
        for k, f in cases.items():
            samples[k].append(_sample(f, inner[k]) / n_ops * 1e6)
    return {k: {"median_us": statistics.median(v), "min_us": min(v), "max_us": max(v)} for k, v in samples.items()}


# ---------------------------------------------------------------------------- report
def _fmt_ms(s):
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def print_timing(name, sizes, dtype, res, labels):
    dims = " ".join(f"{k}={sizes[k]}" for k in "VDHBT")
    print(f"\n{name} {sizes['title']} ({dims}), {dtype}, {step_flops(**sizes) / 1e9:.3g} GFLOP/step")
    print(f"  {'system':<16} {'median ms':>10} {'min-max ms':>18} {'ratio':>7}   ")
    for k, v in res.items():
        rng = f"{_fmt_ms(v['min_s'])}-{_fmt_ms(v['max_s'])}"
        print(f"  {k:<16} {_fmt_ms(v['median_s']):>10} {rng:>18} {v['ratio']:>6.2f}x   {labels[k]}")
    sys.stdout.flush()


def _mb(b):
    return "n/a" if b is None else f"{b / 2 ** 20:.2f} MB"


def _x(r):
    return "" if r is None else f" ({r:.2f}x)"


def run(args):
    t_start = time.perf_counter()
    torch = _torch()
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    classes = list(systems_mod.ALL)
    notes = []
    if torch is None:
        classes = [c for c in classes if c.key not in systems_mod.TORCH_SYSTEMS]
        notes.append("torch is not installed: the PyTorch systems are skipped")
    if args.systems:
        wanted = {s.strip() for s in args.systems.split(",")} | {"numpy"}   # the baseline is always needed
        unknown = wanted - {c.key for c in systems_mod.ALL}
        if unknown:
            raise SystemExit(f"unknown system(s) {sorted(unknown)}; choose from {[c.key for c in systems_mod.ALL]}")
        classes = [c for c in classes if c.key in wanted]
    labels = {c.key: c.label for c in systems_mod.ALL}
    meta = machine_info(args.threads)
    meta.update(quick=args.quick, repeats=args.repeats, dtypes=args.dtypes, notes=notes)
    print("machine:", machine_line(meta))
    print(f"date {meta['date']}, commit {meta['commit_short']}"
          + (" (engine files have uncommitted changes)" if meta["engine_uncommitted_changes"] else ""))
    for n in notes:
        print("note:", n)

    worst = baseline_numpy.gradient_check()
    print(f"numpy baseline: gradients match central differences (worst error {worst:.2g} of the tolerance)")

    sizes_of = QUICK if args.quick else FULL
    sample_s = 0.01 if args.quick else 0.2
    out = {"meta": meta, "workloads": {k: {kk: vv for kk, vv in v.items()} for k, v in sizes_of.items()},
           "timing": {}, "memory": {}, "perop": None, "scaling": None, "blas_peak_gflops": {}}

    for dtype in args.dtypes:
        for name in [w for w in args.workloads if w in TIMED]:
            sizes = sizes_of[name]
            res = time_systems(classes, sizes, np.dtype(dtype), args.repeats, sample_s, f"{name} {dtype}")
            out["timing"].setdefault(name, {})[dtype] = res
            print_timing(name, sizes, dtype, res, labels)
            if name == "W3":
                peak = blas_peak(np.dtype(dtype), 256 if args.quick else 1024)
                out["blas_peak_gflops"][dtype] = peak
                flops = step_flops(**sizes)
                eff = ", ".join(f"{k} {flops / v['median_s'] / 1e9 / peak:.0%}" for k, v in res.items())
                print(f"  share of this machine's {dtype} BLAS peak ({peak:.1f} GFLOP/s): {eff}")
            if name == "W4" and not args.no_memory:
                mem = measure_memory(classes, sizes, np.dtype(dtype), args.threads, rss=not args.quick)
                out["memory"][dtype] = mem
                print(f"  peak memory of one step, above what was allocated before it:")
                for k, v in mem.items():
                    print(f"  {k:<16} traced (tracemalloc) {_mb(v['traced_peak_bytes'])}{_x(v['traced_peak_ratio'])}, "
                          f"resident-set growth {_mb(v['rss_growth_bytes'])}{_x(v['rss_growth_ratio'])}")

    if "perop" in args.workloads:
        n_ops = 100 if args.quick else 1000
        res = perop(n_ops, args.repeats, sample_s, torch is not None)
        out["perop"] = {"n_ops": n_ops, "shape": [10, 10], "dtype": "float64", "results": res}
        print(f"\nper-op overhead: chain of {n_ops} elementwise ops on (10, 10) float64, microseconds per op")
        for k, v in res.items():
            print(f"  {k:<32} {v['median_us']:8.2f} us   ({v['min_us']:.2f}-{v['max_us']:.2f})")

    if "scaling" in args.workloads:
        base = dict(FULL["W4"])
        if args.quick:
            base.update(T=50)
        Ts = (base["T"], base["T"] * 10)
        dtype = args.dtypes[0]
        res = {}
        for T in Ts:
            sizes = dict(base, T=T)
            res[T] = time_systems(classes, sizes, np.dtype(dtype), min(args.repeats, 3), 0.0, f"scaling T={T}")
            print_timing(f"scaling T={T}", dict(sizes, title="W4 sizes"), dtype, res[T], labels)
        ratio = {k: res[Ts[1]][k]["median_s"] / res[Ts[0]][k]["median_s"] for k in res[Ts[0]]}
        out["scaling"] = {"dtype": dtype, "T": list(Ts), "times": {str(T): r for T, r in res.items()},
                          "ratio": ratio}
        print(f"  time per step at T={Ts[1]} / T={Ts[0]} (linear would be 10x): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))

    out["meta"]["elapsed_s"] = time.perf_counter() - t_start
    print(f"\nfinished in {out['meta']['elapsed_s']:.0f} s")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=float)
        print(f"results written to {args.out}")
    return 0
