"""Before and after: the same steps timed on two versions of the package, taking turns, in one run.

    python benchmarks/compare.py --before 406aad8                 # that commit against the working tree
    python benchmarks/compare.py --before HEAD~1 --after HEAD --rounds 15 --cases perop,W2/tg_rnncell

A case is ``perop`` (forward + backward of a chain of 200 elementwise ops on
(10, 10) float64, microseconds per op: the engine's own overhead) or
``W<n>/<system>`` (one training step of benchmarks/systems.py's system on
run.py's workload, float32, milliseconds).  Each sample is a fresh process
running one version's package and benchmark files (``git archive`` of the
commit), timing the case for about ``--sample-s`` seconds after a warm-up.
The versions alternate in ABBA order round by round, so that a slow patch of a
noisy machine hits both alike.  The table shows each version's median sample,
the ratio after / before of the medians, and the middle half of the per-round
ratios (a round pairs one sample of each version).
"""
import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_CASES = "perop,W1/tg_rnncell,W2/tg_rnncell,W3/tg_rnncell,W4/tg_rnncell"
PINNED = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def child(case, sample_s):
    """Run in a sample's process (its package first on sys.path): the median time of one case."""
    import time
    import numpy as np
    from tinygrad_rnn import Tensor
    sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
    if case == "perop":
        rng = np.random.default_rng(0)
        x0, a, c = rng.standard_normal((10, 10)), Tensor(rng.standard_normal((10, 10))), Tensor(np.ones((10, 10)))
        n, scale = 200, 1e6 / 200

        def step():
            x = Tensor(x0, requires_grad=True)
            y = x
            for i in range(n):
                y = y * a if i % 2 == 0 else y + c
            y.sum().backward()
    else:
        import run
        import systems
        workload, key = case.split("/")
        system = run.build([systems.BY_KEY[key]], run.FULL[workload], "float32")[key]
        step, scale = system.step, 1e3
    for _ in range(2):
        step()
    times = []
    t_end = time.perf_counter() + sample_s
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * scale


def sample(root, case, sample_s):
    env = dict(os.environ, PYTHONPATH=root, **PINNED)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case, str(sample_s)],
                         cwd=root, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{case} in {root} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def export(ref, into):
    """The package and benchmark files of a commit, written under ``into``."""
    data = subprocess.run(["git", "archive", ref, "tinygrad_rnn", "benchmarks"], cwd=ROOT,
                          capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="a git commit (required)")
    p.add_argument("--after", default=None, help="a git commit (default: the working tree)")
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated (default {DEFAULT_CASES})")
    p.add_argument("--rounds", type=int, default=8, help="samples per version and case (default 8)")
    p.add_argument("--sample-s", type=float, default=1.0, help="seconds timed per sample (default 1)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]))))
        return
    if not args.before:
        p.error("--before is required")
    for case in args.cases.split(","):
        if case != "perop" and not re.fullmatch(r"W[1-4]/\w+", case):
            p.error(f"unknown case {case!r}: perop, or W1..W4/<system> (a key of benchmarks/systems.py)")
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"before": export(args.before, os.path.join(tmp, "before")),
                 "after": export(args.after, os.path.join(tmp, "after")) if args.after else ROOT}
        print(f"before: {args.before}   after: {args.after or 'working tree'}   {args.rounds} rounds, "
              f"ABBA order, 1 BLAS thread")
        print(f"{'case':24} {'before':>10} {'after':>10} {'after/before':>13} {'per-round ratios (IQR)':>24}")
        for case in args.cases.split(","):
            got = {"before": [], "after": []}
            for r in range(args.rounds):
                for who in (("before", "after") if r % 2 == 0 else ("after", "before")):
                    got[who].append(sample(roots[who], case, args.sample_s))
            ratios = sorted(a / b for a, b in zip(got["after"], got["before"]))
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            b, a = statistics.median(got["before"]), statistics.median(got["after"])
            unit = "us/op" if case == "perop" else "ms"
            print(f"{case:24} {b:>7.3f} {unit:5}{a:>7.3f} {unit:5}{a / b:>9.3f}   {q[0]:>10.3f} - {q[2]:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
