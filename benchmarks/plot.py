"""Plot (and tabulate) a results file written by ``run.py --out``.

    python benchmarks/plot.py results.json                  # -> docs/img/benchmarks.png
    python benchmarks/plot.py results.json --png out.png
    python benchmarks/plot.py results.json --markdown       # the tables of docs/benchmarks.md

The plot shows each system's time per training step as a ratio to the numpy
baseline, against the workload's size (matrix-product FLOPs per step), one
panel per dtype.  matplotlib is needed for the plot only.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["numpy", "tg_rnncell", "tg_custom", "tg_rnncell_fused", "tg_custom_fused", "torch_loop", "torch_rnn"]
NAMES = {"numpy": "numpy (hand BPTT)", "tg_rnncell": "tinygrad_rnn RNNCell + unroll",
         "tg_custom": "tinygrad_rnn function cell",
         "tg_rnncell_fused": "RNNCell, fused ops on", "tg_custom_fused": "function cell, fused ops on", "torch_loop": "PyTorch eager loop",
         "torch_rnn": "torch.nn.RNN (fused)"}


def flops(w):
    return 3 * 2 * w["B"] * w["T"] * (w["D"] * w["H"] + w["H"] * w["H"] + w["H"] * w["V"])


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: matplotlib is not installed (pip install matplotlib); --markdown works without it")
    dtypes = sorted({d for per in res["timing"].values() for d in per})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.2), sharey=True, squeeze=False)
    names = [n for n in ("W1", "W2", "W3", "W4") if n in res["timing"]]
    for ax, dtype in zip(axes[0], dtypes):
        present = sorted((n for n in names if dtype in res["timing"][n]), key=lambda n: flops(res["workloads"][n]))
        xs = [flops(res["workloads"][n]) for n in present]
        for key in ORDER:
            pts = [(x, res["timing"][n][dtype][key]["ratio"]) for x, n in zip(xs, present)
                   if key in res["timing"][n][dtype]]
            if pts:
                style = "k--" if key == "numpy" else "o-"
                ax.plot(*zip(*pts), style, label=NAMES.get(key, key), lw=2 if key.startswith("tg") else 1.2)
        for x, n in zip(xs, present):
            ax.annotate(n, (x, 1), textcoords="offset points", xytext=(0, -14 - 10 * (names.index(n) % 2)),
                        ha="center", fontsize=9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("workload size: matrix-product FLOPs per training step")
        ax.set_title(f"{dtype}, {res['meta'].get('threads_requested')} thread(s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("time per step / numpy baseline")
    axes[0][-1].legend(fontsize=8)
    m = res["meta"]
    fig.suptitle(f"{m['date']}, commit {m['commit_short']}, {m['cpu']} ({m['cores']} cores), numpy {m['numpy']}",
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def _ms(s):
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def markdown(res):
    """The results as markdown tables: ratios, times, per-op overhead, memory and scaling."""
    lines = []
    m = res["meta"]
    blas = m["blas"]
    lines.append(f"Run of {m['date']} at commit `{m['commit_short']}`"
                 + (" (with uncommitted engine changes)" if m.get("engine_uncommitted_changes") else "")
                 + f": {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, "
                 f"numpy {m['numpy']} ({blas.get('name')} {blas.get('version')}), torch {m['torch']}; "
                 f"{m['thread_env'].get('OPENBLAS_NUM_THREADS') or 'default'} thread(s); "
                 f"{m['repeats']} samples per system; suite time {m.get('elapsed_s', 0):.0f} s.")
    lines.append("")
    keys = [k for k in ORDER if any(k in per[d] for per in res["timing"].values() for d in per)]
    names = [n for n in ("W1", "W2", "W3", "W4") if n in res["timing"]]
    for dtype in ("float32", "float64"):
        if not any(dtype in res["timing"][n] for n in names):
            continue
        lines.append(f"**{dtype}**: median time per training step (min-max), ratio to numpy")
        lines.append("")
        lines.append("| workload | " + " | ".join(NAMES.get(k, k) for k in keys) + " |")
        lines.append("|---|" + "---|" * len(keys))
        for n in names:
            per = res["timing"][n].get(dtype)
            if not per:
                continue
            w = res["workloads"][n]
            cells = []
            for k in keys:
                v = per.get(k)
                cells.append("-" if v is None else
                             f"**{v['ratio']:.2f}x** {_ms(v['median_s'])} ms ({_ms(v['min_s'])}-{_ms(v['max_s'])})")
            lines.append(f"| {n} {w['title']} (V={w['V']} D={w['D']} H={w['H']} B={w['B']} T={w['T']}) | "
                         + " | ".join(cells) + " |")
        lines.append("")
    if res.get("perop"):
        p = res["perop"]
        lines.append(f"**Per-op overhead**: forward + backward of a chain of {p['n_ops']} elementwise ops "
                     f"on a (10, 10) float64 array, microseconds per op (median, min-max)")
        lines.append("")
        lines.append("| measured | us per op |")
        lines.append("|---|---|")
        for k, v in p["results"].items():
            lines.append(f"| {k.replace('_', ' ')} | {v['median_us']:.2f} ({v['min_us']:.2f}-{v['max_us']:.2f}) |")
        lines.append("")
    if res.get("memory"):
        lines.append("**Peak memory of one W4 training step** (above what was allocated before it; "
                     "ratio to numpy)")
        lines.append("")
        lines.append("| dtype | system | traced by tracemalloc | resident-set growth |")
        lines.append("|---|---|---|---|")
        for dtype, mem in res["memory"].items():
            for k, v in mem.items():
                def cell(field):
                    b = v[f"{field}_bytes"]
                    return "n/a" if b is None else f"{b / 2 ** 20:.2f} MB ({v[f'{field}_ratio']:.2f}x)"
                lines.append(f"| {dtype} | {NAMES.get(k, k)} | {cell('traced_peak')} | {cell('rss_growth')} |")
        lines.append("")
    if res.get("scaling"):
        s = res["scaling"]
        T0, T1 = s["T"]
        lines.append(f"**Scaling in T** ({s['dtype']}, W4 sizes): time per step at T={T1} over T={T0} "
                     f"(linear is 10x, target <= 11x)")
        lines.append("")
        lines.append(f"| system | T={T0} | T={T1} | ratio |")
        lines.append("|---|---|---|---|")
        for k, r in s["ratio"].items():
            a, b = s["times"][str(T0)][k]["median_s"], s["times"][str(T1)][k]["median_s"]
            lines.append(f"| {NAMES.get(k, k)} | {_ms(a)} ms | {_ms(b)} ms | {r:.2f}x |")
        lines.append("")
    if res.get("blas_peak_gflops"):
        lines.append("BLAS peak of this machine (1024 x 1024 product): "
                     + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in res["blas_peak_gflops"].items()) + ".")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="JSON written by run.py --out")
    p.add_argument("--png", default=os.path.join(ROOT, "docs", "img", "benchmarks.png"))
    p.add_argument("--markdown", action="store_true", help="print the markdown tables instead of plotting")
    args = p.parse_args(argv)
    with open(args.results) as f:
        res = json.load(f)
    if args.markdown:
        print(markdown(res))
    else:
        plot(res, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
