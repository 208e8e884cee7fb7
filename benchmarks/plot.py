"""Plot each system's ratio to the numpy baseline against workload size, from run.py's JSON.

    python benchmarks/run.py --json results.json
    python benchmarks/plot.py results.json              # writes docs/img/benchmarks.png
    python benchmarks/plot.py results.json -o out.png
    python benchmarks/plot.py results.json --markdown   # the tables of docs/benchmarks.md instead

Size is the matrix-product FLOPs of one training step (forward and backward);
one panel per dtype, log scale on both axes.  matplotlib is optional: without it
the script says so and writes nothing.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "docs", "img", "benchmarks.png")
STYLE = {  # system -> (colour, line style, marker)
    "numpy": ("black", "-", "o"),
    "tg_rnncell": ("tab:blue", "-", "s"),
    "tg_custom": ("tab:orange", "-", "D"),
    "tg_custom_composite": ("tab:blue", "--", "s"),
    "tg_rnncell_expanded": ("tab:orange", "--", "D"),
    "tg_rnncell_traced": ("tab:purple", "-.", "s"),
    "tg_custom_traced": ("tab:brown", "-.", "D"),
    "tg_rnncell_traced_loop": ("tab:pink", "-.", "o"),
    "torch_loop": ("tab:red", ":", "^"),
    "torch_rnn": ("tab:green", ":", "v"),
}


ORDER = tuple(STYLE)
TIMED = ("W1", "W2", "W3", "W4")


def timing_by_dtype(results):
    """{dtype: {workload: {system: stats}}}, whichever way round the JSON nests them."""
    if "timing_by_dtype" in results:
        return results["timing_by_dtype"]
    out = {}
    for name, per in results.get("timing", {}).items():
        for dtype, res in per.items():
            out.setdefault(dtype, {})[name] = res
    return out


def series(results, dtype):
    """{system: [(flops, ratio, workload), ...]} sorted by size, for one dtype."""
    out = {}
    for name, res in timing_by_dtype(results).get(dtype, {}).items():
        flops = results["flops"][name]
        for key, v in res.items():
            out.setdefault(key, []).append((flops, v["ratio"], name))
    return {k: sorted(v) for k, v in out.items()}


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
        return None
    dtypes = list(timing_by_dtype(results))
    if not dtypes:
        raise ValueError("the results hold no timed workload: nothing to plot")
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.8), sharey=True, squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        for key, pts in series(results, dtype).items():
            colour, ls, marker = STYLE.get(key, ("grey", "-", "."))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker=marker, color=colour, label=key)
        for flops, _, name in series(results, dtype).get("numpy", []):
            ax.annotate(name, (flops, 1), textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("matrix-product FLOPs per training step")
        ax.set_title(dtype)
        ax.grid(True, which="both", alpha=0.3)
        top = max([1.0] + [p[1] for pts in series(results, dtype).values() for p in pts])
        ticks = [t for t in (0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 12, 20, 30, 50) if t <= top * 1.2]
        ax.set_yticks(ticks)
        ax.set_yticklabels([f"{t:g}x" for t in ticks])
        ax.minorticks_off()
    axes[0][0].set_ylabel("time per step / numpy baseline (median)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=len(names))
    m = results["meta"]
    fig.suptitle(f"{m['date']}, commit {m['commit_short']}, {m['cpu']}, threads {m['threads']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ms(s):
    return f"{s * 1e3:.3g}" if s < 1 else f"{s * 1e3:.0f}"


def markdown(results):
    """The results as markdown tables: ratios, times, memory, per-op overhead, scaling."""
    m = results["meta"]
    blas = m["blas"]
    by_dtype = timing_by_dtype(results)
    keys = [k for k in ORDER if any(k in r for per in by_dtype.values() for r in per.values())]
    keys += sorted({k for per in by_dtype.values() for r in per.values() for k in r} - set(keys))
    lines = [f"Run of {m['date']} at commit `{m['commit_short']}`"
             + (" (with uncommitted engine changes)" if m.get("engine_uncommitted_changes") else "")
             + f": {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, numpy {m['numpy']} "
             f"({blas.get('name')} {blas.get('version')}), torch {m['torch'] or 'not installed'}; "
             f"threads {m['threads']}; {m['repeats']} samples per system"
             + (f"; suite time {m['elapsed_s']:.0f} s" if "elapsed_s" in m else "") + ".", ""]
    lines += ["Ratio of the median time per training step to the numpy baseline's, same run:", "",
              "| workload | dtype | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for dtype, per in by_dtype.items():
        for name in [n for n in TIMED if n in per]:
            lines.append(f"| {name} | {dtype} | "
                         + " | ".join(f"{per[name][k]['ratio']:.2f}x" if k in per[name] else "-" for k in keys)
                         + " |")
    lines += ["", "Median time per training step in ms (min-max):", "",
              "| workload | dtype | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for dtype, per in by_dtype.items():
        for name in [n for n in TIMED if n in per]:
            cells = []
            for k in keys:
                v = per[name].get(k)
                cells.append("-" if v is None else f"{_ms(v['median_s'])} ({_ms(v['min_s'])}-{_ms(v['max_s'])})")
            lines.append(f"| {name} | {dtype} | " + " | ".join(cells) + " |")
    lines.append("")
    if results.get("memory"):
        lines += ["Peak memory of one W4 training step (the second step of a built system, after a warm-up; "
                  "ratio to numpy):", "",
                  "| dtype | system | tracemalloc peak | resident-set growth |", "|---|---|---|---|"]
        for dtype, mem in results["memory"].items():
            for k, v in mem.items():
                def cell(field, v=v):
                    b = v[f"{field}_bytes"]
                    r = v.get(f"{field}_ratio")
                    return "n/a" if b is None else f"{b / 2 ** 20:.2f} MiB" + ("" if r is None else f" ({r:.2f}x)")
                lines.append(f"| {dtype} | {k} | {cell('traced_peak')} | {cell('rss_growth')} |")
        lines.append("")
    if results.get("perop"):
        p = results["perop"]
        lines += [f"Per-op overhead: forward + backward of a chain of {p['n_ops']} elementwise ops on a (10, 10) "
                  f"float64 array, microseconds per op (median, min-max):", "",
                  "| measured | us per op |", "|---|---|"]
        for k, v in p["results"].items():
            lines.append(f"| {k} | {v['median_us']:.2f} ({v['min_us']:.2f}-{v['max_us']:.2f}) |")
        lines.append("")
    if results.get("scaling"):
        s = results["scaling"]
        T0, T1 = s["T"]
        lines += [f"Scaling in T ({s['dtype']}, W4 sizes): time per step at T={T1} over T={T0} "
                  f"(linear is 10x, target <= 11x):", "",
                  f"| system | T={T0} | T={T1} | ratio |", "|---|---|---|---|"]
        for k, r in s["ratio"].items():
            a, b = s["times"][str(T0)][k]["median_s"], s["times"][str(T1)][k]["median_s"]
            lines.append(f"| {k} | {_ms(a)} ms | {_ms(b)} ms | {r:.2f}x |")
        lines.append("")
    if results.get("blas_peak_gflops"):
        lines.append("BLAS peak of this machine (1024 x 1024 product): "
                     + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in results["blas_peak_gflops"].items()) + ".")
        for dtype, share in results.get("w3_blas_share", {}).items():
            lines.append(f"W3 {dtype}, share of that peak: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items())
                         + ".")
        lines.append("")
    return "\n".join(lines)


# issue 6's targets: (figure, limit, how to read it from the results for one system)
TG_KEYS = ("tg_rnncell", "tg_custom", "tg_custom_composite", "tg_rnncell_expanded", "tg_rnncell_traced",
           "tg_custom_traced", "tg_rnncell_traced_loop")
TRACED_KEYS = ("tg_rnncell_traced", "tg_custom_traced")
# the traced programs' targets (issue 7): ratios to the numpy baseline, float32
TRACED_TARGETS = (("W1", 1.5), ("W2", 1.1), ("W3", 1.0), ("W4", 1.2))
TRACED_MEMORY_TARGET = 1.2


def targets(results, dtype="float32"):
    """Markdown table of the issue's targets against this run (ratios in ``dtype``; float32 as the issue says)."""
    per = timing_by_dtype(results).get(dtype, {})
    keys = [k for k in TG_KEYS if any(k in r for r in per.values())]
    if not keys:
        return ""

    def verdict(value, limit, fmt, higher_is_better=False):
        if value is None:
            return "-"
        ok = value >= limit if higher_is_better else value <= limit
        return f"{fmt.format(value)} ({'met' if ok else 'not met'})"

    rows = []
    for name, limit in (("W1", 3.0), ("W2", 1.5), ("W3", 1.15), ("W4", 1.5)):
        if name in per:
            rows.append((f"{name} time per step / numpy", f"<= {limit}x",
                         [verdict(per[name][k]["ratio"], limit, "{:.2f}x") if k in per[name] else "-"
                          for k in keys]))
    mem = results.get("memory", {}).get(dtype)
    if mem:
        rows.append(("W4 peak memory / numpy (tracemalloc)", "<= 1.5x",
                     [verdict(mem[k]["traced_peak_ratio"], 1.5, "{:.2f}x") if k in mem else "-" for k in keys]))
    sc = results.get("scaling")
    if sc:
        rows.append((f"time per step, T={sc['T'][1]} / T={sc['T'][0]} ({sc['dtype']})", "<= 11x",
                     [verdict(sc["ratio"].get(k), 11.0, "{:.2f}x") for k in keys]))
    po = (results.get("perop") or {}).get("results", {}).get("tinygrad_rnn forward + backward")
    if po:
        rows.append(("per-op overhead, fwd+bwd, (10,10) float64", "<= 2.5 us",
                     [verdict(po["median_us"], 2.5, "{:.2f} us")] + ["same engine"] * (len(keys) - 1)))
    share = results.get("w3_blas_share", {}).get(dtype)
    if share:
        rows.append(("W3 share of single-core BLAS peak", ">= 60%",
                     [verdict(share.get(k), 0.6, "{:.0%}", higher_is_better=True) for k in keys]))
    lines = [f"| figure ({dtype} unless said) | target | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    lines += [f"| {fig} | {lim} | " + " | ".join(cells) + " |" for fig, lim, cells in rows]
    return "\n".join(lines)


def traced_targets(results, dtype="float32"):
    """Markdown table of the traced programs' own, tighter targets against this run."""
    per = timing_by_dtype(results).get(dtype, {})
    keys = [k for k in TRACED_KEYS if any(k in r for r in per.values())]
    if not keys:
        return ""
    rows = []
    for name, limit in TRACED_TARGETS:
        if name in per:
            rows.append((f"{name} time per step / numpy", f"<= {limit}x",
                         [_verdict(per[name][k]["ratio"], limit) if k in per[name] else "-" for k in keys]))
    mem = results.get("memory", {}).get(dtype)
    if mem:
        rows.append(("W4 peak memory / numpy (tracemalloc)", f"<= {TRACED_MEMORY_TARGET}x",
                     [_verdict(mem[k]["traced_peak_ratio"], TRACED_MEMORY_TARGET) if k in mem else "-"
                      for k in keys]))
    lines = [f"| figure ({dtype}) | target | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += [f"| {fig} | {lim} | " + " | ".join(cells) + " |" for fig, lim, cells in rows]
    return "\n".join(lines)


def _verdict(value, limit):
    return f"{value:.2f}x ({'met' if value <= limit else 'not met'})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="JSON written by benchmarks/run.py --json")
    p.add_argument("-o", "--output", "--png", dest="output", default=DEFAULT_OUT,
                   help=f"image to write (default {DEFAULT_OUT})")
    p.add_argument("--markdown", action="store_true", help="print the markdown tables instead of plotting")
    p.add_argument("--targets", action="store_true", help="print the issue's targets against this run instead")
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    if args.markdown:
        print(markdown(results))
        return 0
    if args.targets:
        print(targets(results))
        print()
        print(traced_targets(results))
        return 0
    path = plot(results, args.output)
    if path:
        print(f"plot written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
