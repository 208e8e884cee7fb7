"""Time one training step of a token language model in every system; print and save the results.

    python benchmarks/run.py                 # the full suite (a few minutes on 2 cores)
    python benchmarks/run.py --quick         # tiny sizes, a few seconds: checks that the suite runs
    python benchmarks/run.py --dtype float32 --workloads W2,W3 --repeats 9 --out results.json

A training step is forward + backward + SGD update on one batch (embedding ->
tanh RNN -> affine -> softmax cross-entropy, mean over all positions).  Every
system starts from the same weights and data in the same dtype; their first
losses are checked to agree before anything is timed.  Threads are pinned to
1 (``--threads``) before numpy is imported.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# the sizes are in suite.py; names only here, so that parsing needs no numpy
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "perop", "scaling")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few repeats (seconds); the T-scaling check is skipped")
    p.add_argument("--dtype", default="both", choices=["float32", "float64", "both"])
    p.add_argument("--workloads", default=None,
                   help=f"comma-separated subset of {','.join(ALL_WORKLOADS)} (default: all; "
                        f"'scaling' is left out of --quick unless named)")
    p.add_argument("--systems", default=None,
                   help="comma-separated subset of numpy,tg_rnncell,tg_custom,torch_loop,torch_rnn")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed samples per system (default 7, or 3 with --quick); the median is reported")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads (default 1; 0 leaves the environment as it is)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement of W4")
    p.add_argument("--out", default=None, help="write all results and machine information to this JSON file")
    p.add_argument("--memory-child", nargs=3, metavar=("SYSTEM", "DTYPE", "SIZES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.threads < 0:
        p.error("--threads must be 0 (leave alone) or positive")
    if args.workloads is None:
        args.workloads = [w for w in ALL_WORKLOADS if not (args.quick and w == "scaling")]
    else:
        args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
        bad = [w for w in args.workloads if w not in ALL_WORKLOADS]
        if bad:
            p.error(f"unknown workload(s) {bad}; choose from {list(ALL_WORKLOADS)}")
    args.dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    return args


def pin_threads(n):
    """Set the thread-count variables every BLAS reads at load time: must run before numpy is imported."""
    if n:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            os.environ[var] = str(n)


def main(argv=None):
    args = parse_args(argv)
    pin_threads(args.threads)
    sys.path.insert(0, HERE)
    sys.path.insert(1, ROOT)
    import suite   # imports numpy: only now, with the thread variables set
    if args.memory_child:
        return suite.memory_child(*args.memory_child, threads=args.threads)
    return suite.run(args)


if __name__ == "__main__":
    sys.exit(main())
