"""Plot each system's ratio to the numpy baseline against workload size, from run.py's JSON.

    python benchmarks/run.py --json results.json
    python benchmarks/plot.py results.json              # writes docs/img/benchmarks.png
    python benchmarks/plot.py results.json -o out.png

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
    "tg_rnncell_fused": ("tab:blue", "--", "s"),
    "tg_custom_fused": ("tab:orange", "--", "D"),
    "torch_loop": ("tab:red", ":", "^"),
    "torch_rnn": ("tab:green", ":", "v"),
}


def series(results, dtype):
    """{system: [(flops, ratio, workload), ...]} sorted by size, for one dtype."""
    out = {}
    for name, res in results["timing_by_dtype"].get(dtype, {}).items():
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
    dtypes = list(results["timing_by_dtype"])
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
    axes[0][0].set_ylabel("time per step / numpy baseline (median)")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    m = results["meta"]
    fig.suptitle(f"{m['date']}, commit {m['commit_short']}, {m['cpu']}, threads {m['threads']}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="JSON written by benchmarks/run.py --json")
    p.add_argument("-o", "--output", default=DEFAULT_OUT, help=f"image to write (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    path = plot(results, args.output)
    if path:
        print(f"plot written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
