"""Time one training step of a token language model in every system; print (and optionally save) the results.

    python benchmarks/run.py                  # the full suite, float32 and float64 (several minutes)
    python benchmarks/run.py --quick          # tiny sizes, a few seconds: checks that the suite runs
    python benchmarks/run.py --dtype float32 --workloads W2,W3 --repeats 9 --json results.json

A training step is forward + backward + SGD update on one batch (embedding ->
tanh RNN -> affine -> softmax cross-entropy, mean over all positions).  Every
system starts from the same weights and data in the same dtype, and their first
losses must agree before anything is timed.  BLAS/OpenMP threads (and torch's)
are pinned to 1 (``--threads``) before numpy is imported.

Timing: after two warm-up steps, each sample is the mean time of enough
consecutive steps to last about 0.2 s (one step when a step is longer); the
systems take turns sample by sample, in a rotating order, so that a slow patch
of the machine hits them all alike.  The table shows the median sample, min-max,
and the ratio of the median to the numpy baseline's median from the same run.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WORKLOADS = ("W1", "W2", "W3", "W4", "perop", "scaling")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repeats (seconds); the T-scaling run is left out unless named")
    p.add_argument("--dtype", default="both", choices=["float32", "float64", "both"],
                   help="dtype of weights and arithmetic (default: both, float32 first)")
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--systems", default=None,
                   help="comma-separated subset of the systems (the numpy baseline always runs)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per system (default 7; 3 with --quick); the median is reported")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads (default 1; 0 leaves the environment as it is)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement of W4")
    p.add_argument("--json", "--out", dest="json", default=None, metavar="PATH",
                   help="also write every result and the machine information to this JSON file")
    p.add_argument("--memory-child", nargs=3, metavar=("SYSTEM", "DTYPE", "SIZES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads < 0:
        p.error(f"--threads must be 0 (leave the environment alone) or positive, got {args.threads}")
    if args.workloads is None:
        args.workloads = [w for w in WORKLOADS if not (args.quick and w == "scaling")]
    else:
        args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
        bad = [w for w in args.workloads if w not in WORKLOADS]
        if bad:
            p.error(f"unknown workload(s) {bad}; choose from {list(WORKLOADS)}")
    args.systems = None if args.systems is None else [s.strip() for s in args.systems.split(",") if s.strip()]
    args.dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    return args


def pin_threads(n):
    """Set the thread counts every BLAS reads when it loads: must run before numpy is imported."""
    if n:
        for var in THREAD_VARS:
            os.environ[var] = str(n)


# Pinning happens before numpy is imported, in main(); the rest of the module imports it lazily.
def main(argv=None):
    args = parse_args(argv)
    if "numpy" in sys.modules and args.threads:
        # in-process callers (the tests) may have loaded numpy already: its thread count is fixed then
        print("note: numpy was imported before run.py; its BLAS threads are what they were", file=sys.stderr)
    pin_threads(args.threads)
    for path in (HERE, ROOT):
        if path not in sys.path:
            sys.path.insert(0, path)
    if args.memory_child:
        return _memory_child(*args.memory_child, threads=args.threads)
    return run(args)


# ============================================================================ everything below needs numpy
# Workload sizes (V, D, H, B, T)
FULL = {
    "W1": dict(V=4, D=4, H=6, B=1, T=4, title="textbook toy"),
    "W2": dict(V=418, D=100, H=100, B=10, T=5, title="DLFS2 small PTB settings"),
    "W3": dict(V=2000, D=256, H=256, B=32, T=35, title="medium"),
    "W4": dict(V=50, D=32, H=64, B=8, T=2000, title="long"),
}
QUICK = {
    "W1": FULL["W1"],
    "W2": FULL["W2"],
    "W3": dict(V=200, D=32, H=32, B=4, T=8, title="medium, quick size"),
    "W4": dict(V=50, D=32, H=64, B=8, T=50, title="long, quick size"),
}
TIMED = ("W1", "W2", "W3", "W4")
SCALING_SYSTEMS = ("numpy", "tg_rnncell")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _git(*cmd):
    import subprocess
    try:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _blas_info():
    import numpy as np
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {"name": blas.get("name"), "version": blas.get("version"),
                "config": blas.get("openblas configuration")}
    except Exception as e:   # the layout of show_config's dict is numpy's, not ours: report, do not fail
        return {"error": repr(e)}


def machine_info(threads, torch):
    import datetime
    import platform
    import numpy as np
    commit = _git("rev-parse", "HEAD")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "commit_short": commit[:10],
        "engine_uncommitted_changes": bool(_git("status", "--porcelain", "--", "tinygrad_rnn")),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas_info(),
        "threads": threads or "environment",
        "thread_env": {k: os.environ.get(k) for k in THREAD_VARS[:3]},
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
    }


def machine_line(m):
    blas = m["blas"]
    return (f"{m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, numpy {m['numpy']} "
            f"({blas.get('name')} {blas.get('version')}), torch {m['torch'] or 'not installed'}")


def thread_line(m):
    env = ", ".join(f"{k}={v}" for k, v in m["thread_env"].items())
    return f"threads: {env}; torch.get_num_threads()={m['torch_threads']}"


def step_flops(V, D, H, B, T, **_):
    """Matrix-product FLOPs of one training step: 2*m*n*k forward, twice that backward."""
    return 3 * 2 * B * T * (D * H + H * H + H * V)


def blas_peak(dtype, n=1024, repeats=10):
    """GFLOP/s of an n x n matrix product: this machine's BLAS peak, for the W3 efficiency figure.

    The best of ``repeats`` products after a few unmeasured ones (the clock and
    the caches settle first: a single early sample has read half the peak).
    """
    import time
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


# ---------------------------------------------------------------------------- timing
def _sample(step, inner):
    import gc
    import time
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(inner):
        step()
    return (time.perf_counter() - t0) / inner


def _freeze():
    """Move every object alive now out of the garbage collector's reach.

    Importing torch leaves hundreds of thousands of long-lived objects; without
    this, each full collection during a step would walk them all and charge a
    numpy-only system for torch being loaded in the same process.
    """
    import gc
    gc.collect()
    gc.freeze()


def build(classes, sizes, dtype, seed=0):
    """Every system of ``classes`` on the same weights and batch: {key: system}."""
    import numpy_bptt
    w = numpy_bptt.make_weights(sizes["V"], sizes["D"], sizes["H"], dtype, seed)
    xs, ts = numpy_bptt.make_data(sizes["V"], sizes["B"], sizes["T"], seed + 1)
    built = {cls.key: cls(w, xs, ts) for cls in classes}
    _freeze()
    return built


def check_losses(built, dtype, where):
    """Every system must compute the baseline's loss: otherwise the timings would compare different work."""
    import numpy as np
    losses = {k: s.step() for k, s in built.items()}
    ref = losses["numpy"]
    tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    for k, loss in losses.items():
        if not abs(loss - ref) <= tol * max(1.0, abs(ref)):
            raise RuntimeError(f"{where}: {k} computes the loss {loss!r}, the numpy baseline {ref!r}")
    return losses


def time_systems(classes, sizes, dtype, repeats, sample_s, where, second_warmup=True):
    import statistics
    built = build(classes, sizes, dtype)
    check_losses(built, dtype, where)            # also the first warm-up step
    inner = dict.fromkeys(built, 1)
    if second_warmup:
        for k, s in built.items():               # second warm-up step, which also sizes the samples
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
    base = out["numpy"]["median_s"]
    for v in out.values():
        v["ratio"] = v["median_s"] / base
    return out


# ---------------------------------------------------------------------------- memory
def traced_peak(system):
    """Peak bytes traced by tracemalloc (numpy buffers and Python objects) during a system's second step.

    The first step is a warm-up (compiled compositions are written then, once);
    the peak of the next step is measured above what was allocated before it.
    """
    import gc
    import tracemalloc
    system.step()     # warm-up: compiled compositions are written, once, on the first step
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
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


def _memory_child(key, dtype, sizes, threads):
    """In a fresh process: how far the first step of a freshly built system lifts the resident set.

    A step of the same system at the tiny W1 size runs first, so that the
    libraries' lazily allocated buffers (BLAS workspaces, torch's autograd
    engine) already exist; then the measured system is built, the kernel's
    high-water mark is reset (/proc/self/clear_refs) and read after its first
    step, as tracemalloc measures it.  Prints JSON.
    """
    import gc
    import json
    import numpy as np
    import systems
    sizes = json.loads(sizes)
    if key in systems.TORCH_SYSTEMS and threads:
        systems.torch_module().set_num_threads(threads)
    cls = systems.BY_KEY[key]
    for s in build([cls], FULL["W1"], np.dtype(dtype)).values():
        s.step()
    (system,) = build([cls], sizes, np.dtype(dtype)).values()
    gc.collect()
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                             # resets VmHWM to the current resident set
    system.step()
    peak = _status_bytes("VmHWM")
    print(json.dumps({"rss_growth_bytes": max(0, peak - before)}))
    return 0


def rss_growth(key, dtype, sizes, threads):
    """Resident-set growth of one step of ``key`` in a fresh process (bytes), or None off Linux."""
    import json
    import subprocess
    if not os.access("/proc/self/clear_refs", os.W_OK):
        return None
    cmd = [sys.executable, os.path.join(HERE, "run.py"), "--threads", str(threads),
           "--memory-child", key, dtype, json.dumps(sizes)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"memory measurement of {key} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])["rss_growth_bytes"]


def measure_memory(classes, sizes, dtype, threads, rss=True):
    """tracemalloc peak (numpy-based systems) and resident-set growth (all) of one step, with ratios."""
    import numpy as np
    import systems
    out = {}
    built = build(classes, sizes, dtype)
    for k, s in built.items():
        traced = None if k in systems.TORCH_SYSTEMS else traced_peak(s)
        out[k] = {"traced_peak_bytes": traced,
                  "rss_growth_bytes": rss_growth(k, np.dtype(dtype).name, sizes, threads) if rss else None}
    del built
    for field in ("traced_peak_bytes", "rss_growth_bytes"):
        base = out["numpy"][field]
        for v in out.values():
            v[field.replace("_bytes", "_ratio")] = v[field] / base if v[field] is not None and base else None
    return out


# ---------------------------------------------------------------------------- per-op overhead
def perop(n_ops, repeats, sample_s, torch):
    """Forward + backward of a chain of ``n_ops`` elementwise ops (alternately ``* a`` and ``+ c``) on (10, 10) float64.

    ``x`` requires grad; ``a`` and ``c`` are constants.  numpy's own cost is the
    same chain of forward ops, and forward plus the hand-written backward
    (``g = g * a`` at each product; a sum passes ``g`` through).  Microseconds
    per op of the chain.
    """
    import statistics
    import numpy as np
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
        for i in range(n_ops - 1, -1, -1):
            if i % 2 == 0:
                g = g * a
        return g

    ta, tc = Tensor(a), Tensor(c)

    def tg_forward_backward():
        x = Tensor(x0, requires_grad=True)
        y = x
        for i in range(n_ops):
            y = y * ta if i % 2 == 0 else y + tc
        y.sum().backward()
        return x.grad

    cases = {"numpy forward only": np_forward,
             "numpy forward + hand-written backward": np_forward_backward,
             "tinygrad_rnn forward + backward": tg_forward_backward}
    if torch is not None:
        xa, xc, xt0 = torch.from_numpy(a), torch.from_numpy(c), torch.from_numpy(x0)

        def torch_forward_backward():
            x = xt0.clone().requires_grad_(True)
            y = x
            for i in range(n_ops):
                y = y * xa if i % 2 == 0 else y + xc
            y.sum().backward()
            return x.grad

        cases["torch eager forward + backward"] = torch_forward_backward
    # the gradients must agree before their costs are compared
    ref = np_forward_backward()
    np.testing.assert_allclose(tg_forward_backward(), ref, rtol=1e-12)
    if torch is not None:
        np.testing.assert_allclose(cases["torch eager forward + backward"]().numpy(), ref, rtol=1e-12)
    _freeze()
    inner = {k: max(1, int(sample_s / max(_sample(f, 1), 1e-9))) for k, f in cases.items()}
    samples = {k: [] for k in cases}
    for _ in range(repeats):
        for k, f in cases.items():
            samples[k].append(_sample(f, inner[k]) / n_ops * 1e6)
    return {k: {"median_us": statistics.median(v), "min_us": min(v), "max_us": max(v)} for k, v in samples.items()}


# ---------------------------------------------------------------------------- report
def _ms(s):
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def _dims(sizes):
    return " ".join(f"{k}={sizes[k]}" for k in "VDHBT")


def print_timing(name, sizes, dtype, res, labels):
    print(f"\n{name} {sizes['title']} ({_dims(sizes)}), {dtype}, {step_flops(**sizes) / 1e9:.3g} GFLOP/step")
    print(f"  {'system':<18} {'median ms':>10} {'min-max ms':>19} {'ratio':>7}")
    for k, v in res.items():
        span = f"{_ms(v['min_s'])}-{_ms(v['max_s'])}"
        print(f"  {k:<18} {_ms(v['median_s']):>10} {span:>19} {v['ratio']:>6.2f}x   {labels[k]}")
    sys.stdout.flush()


def _mb(b):
    return "n/a" if b is None else f"{b / 2 ** 20:.2f} MiB"


def _x(r):
    return "" if r is None else f" ({r:.2f}x)"


def _ratio(res, k):
    return f"{res[k]['ratio']:.2f}x" if k in res else "-"


def _mem_ratio(mem, k):
    r = mem[k]["traced_peak_ratio"] if k in mem else None
    return "n/a" if r is None else f"{r:.2f}x"


def print_summary(out, keys):
    """One ratio table per dtype: workloads down, systems across (what docs/benchmarks.md shows)."""
    for dtype, per_w in out["timing_by_dtype"].items():
        print(f"\nsummary, {dtype}: median time per step / numpy baseline's (same run)")
        present = [k for k in keys if any(k in r for r in per_w.values())]
        print("  " + f"{'workload':<9}" + "".join(f"{k:>24}" for k in present))
        for name, res in per_w.items():
            cells = "".join(f"{_ratio(res, k):>24}" for k in present)
            print(f"  {name:<9}{cells}")
        mem = out["memory"].get(dtype)
        if mem:
            cells = "".join(f"{_mem_ratio(mem, k):>24}" for k in present)
            print(f"  {'W4 mem':<9}{cells}   (tracemalloc peak of one step / baseline's)")


def run(args):
    import json
    import time
    import numpy as np
    import numpy_bptt
    import systems

    t_start = time.perf_counter()
    classes, notes = systems.available(args.systems)
    torch = systems.torch_module() if any(c.key in systems.TORCH_SYSTEMS for c in classes) else None
    if torch is None and systems.torch_module() is None:
        notes.append("torch is not installed: the per-op comparison has no torch row")
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)
    labels = {c.key: c.label for c in systems.ALL}
    keys = [c.key for c in classes]

    meta = machine_info(args.threads, torch)
    meta.update(quick=args.quick, repeats=args.repeats, dtypes=args.dtypes, notes=notes)
    print("machine:", machine_line(meta))
    print(thread_line(meta))
    print(f"date {meta['date']}, commit {meta['commit_short']}"
          + (" (the engine has uncommitted changes)" if meta["engine_uncommitted_changes"] else "")
          + f", dtypes {', '.join(args.dtypes)}, repeats {args.repeats}" + (", --quick" if args.quick else ""))
    for n in notes:
        print("note:", n)
    worst = numpy_bptt.gradient_check()
    print(f"numpy baseline: gradients match central differences in float64 "
          f"(worst error {worst:.2g} of the tolerance)")

    sizes_of = QUICK if args.quick else FULL
    sample_s = 0.01 if args.quick else 0.2
    out = {"meta": meta, "workloads": {k: dict(v) for k, v in sizes_of.items()},
           "flops": {k: step_flops(**v) for k, v in sizes_of.items()},
           "timing_by_dtype": {}, "memory": {}, "blas_peak_gflops": {}, "w3_blas_share": {},
           "perop": None, "scaling": None, "labels": labels}

    for dtype in args.dtypes:
        for name in [w for w in args.workloads if w in TIMED]:
            sizes = sizes_of[name]
            res = time_systems(classes, sizes, np.dtype(dtype), args.repeats, sample_s, f"{name} {dtype}")
            out["timing_by_dtype"].setdefault(dtype, {})[name] = res
            print_timing(name, sizes, dtype, res, labels)
            if name == "W3":
                n = 256 if args.quick else 1024
                peak = blas_peak(np.dtype(dtype), n)
                flops = step_flops(**sizes)
                share = {k: flops / v["median_s"] / 1e9 / peak for k, v in res.items()}
                out["blas_peak_gflops"][dtype] = peak
                out["w3_blas_share"][dtype] = share
                print(f"  share of this machine's {dtype} BLAS peak ({peak:.1f} GFLOP/s, {n}x{n} product): "
                      + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))
            if name == "W4" and not args.no_memory:
                mem = measure_memory(classes, sizes, np.dtype(dtype), args.threads, rss=not args.quick)
                out["memory"][dtype] = mem
                print("  peak memory of one step above what was allocated before it: tracemalloc (numpy and "
                      "Python allocations; torch's allocator is invisible to it: n/a), and resident-set "
                      "growth in a fresh process (all systems)")
                for k, v in mem.items():
                    print(f"  {k:<18} tracemalloc {_mb(v['traced_peak_bytes'])}{_x(v['traced_peak_ratio'])}, "
                          f"RSS growth {_mb(v['rss_growth_bytes'])}{_x(v['rss_growth_ratio'])}")

    if "perop" in args.workloads:
        n_ops = 100 if args.quick else 1000
        res = perop(n_ops, args.repeats, sample_s, systems.torch_module())
        out["perop"] = {"n_ops": n_ops, "shape": [10, 10], "dtype": "float64", "results": res}
        print(f"\nper-op overhead: forward + backward of a chain of {n_ops} elementwise ops on (10, 10) float64,"
              f" microseconds per op (median, min-max)")
        for k, v in res.items():
            print(f"  {k:<40} {v['median_us']:7.2f} us   ({v['min_us']:.2f}-{v['max_us']:.2f})")

    if "scaling" in args.workloads:
        base = dict(FULL["W4"], title="W4 sizes")
        if args.quick:
            base["T"] = 50
        Ts = (base["T"], base["T"] * 10)
        dtype = args.dtypes[0]
        sc = [c for c in classes if c.key in SCALING_SYSTEMS]
        res = {}
        for T in Ts:
            sizes = dict(base, T=T)
            # one step lasts seconds here: the loss check is the only warm-up, and 3 samples (2 at T=20000)
            res[T] = time_systems(sc, sizes, np.dtype(dtype), min(args.repeats, 3 if T == Ts[0] else 2), 0.0,
                                  f"scaling T={T}", second_warmup=False)
            print_timing(f"scaling T={T}", sizes, dtype, res[T], labels)
        ratio = {k: res[Ts[1]][k]["median_s"] / res[Ts[0]][k]["median_s"] for k in res[Ts[0]]}
        out["scaling"] = {"dtype": dtype, "T": list(Ts), "times": {str(T): r for T, r in res.items()},
                          "ratio": ratio}
        print(f"  time per step at T={Ts[1]} / at T={Ts[0]} (linear: 10x, target <= 11x): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))

    print_summary(out, keys)
    out["meta"]["elapsed_s"] = time.perf_counter() - t_start
    print(f"\nfinished in {out['meta']['elapsed_s']:.0f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
        print(f"results written to {args.json}")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
