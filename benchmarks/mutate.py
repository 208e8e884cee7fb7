"""Mutation testing of the engine: how many small wrong edits of tensor.py and functional.py the tests catch.

    python benchmarks/mutate.py                      # every mutant, the engine tests, 120 s each
    python benchmarks/mutate.py --sample 40 --seed 1 # a random sample of the mutants
    python benchmarks/mutate.py --sample 100 --all-backward --jobs 2 --timeout 150
                                                # every backward mutant and 100 others, two at a time
    python benchmarks/mutate.py --mutant tinygrad_rnn/tensor.py:120:17   # chosen mutants (file:line:col)
    python benchmarks/mutate.py --list               # the mutants only

A mutant is one token changed: an arithmetic or comparison operator swapped
(+ -, * /, < <=, == !=, ...), ``+=`` made ``=``, a small constant changed
(0 -> 1, 1 -> 2, 2 -> 3), ``True``/``False``, ``and``/``or`` or ``&``/``|`` swapped.
Each is written into a copy of the package and the tests run against it
(``-x``, with a timeout), each mutant in a fresh process from its own copy (no
bytecode copied or written, a fresh hypothesis database); a plugin stops the
run when the tests import the package from anywhere else, and the unmutated
copy must pass first.  A mutant is killed when the tests fail.
Mutants on lines of backward formulas (functions named ``*backward*``,
``*_grad*`` but not the recording switches, ``_accumulate``, ``_Scatter``,
``_unbroadcast``, and ``lambda g`` lines) are counted
apart.  Survivors judged equivalent (no input can tell them from the
original) are listed in ``EQUIVALENT`` with the reason, and the score is taken
over the others.  An on-demand tool: not part of CI (a full run takes a long time).

Measured (a full run, every mutant, ``--jobs 2 --timeout 150``): before the last round of tests,
460 mutants, 412 killed (2 by the timeout), 48 survived, 12 of them listed as equivalent: 412 of
448 non-equivalent mutants killed (92.0%), backward formulas 132 of 137.  Then one survivor was
dead code (a default argument that no call uses, now gone), 19 more were judged equivalent (in
``EQUIVALENT``, with the reason), and the other 16 are killed by tests added to
tests/test_engine_blind_spots.py (each checked with ``--mutant``): 459 mutants, 428 killed, 31
survived, all 31 listed as equivalent: 428 of 428 non-equivalent mutants killed (100%), backward
formulas 136 of 136.  The engine changed after that run (only what each backward reads is locked;
the tracer's table entries, views locking their base): the 27 mutants on lines that are new or
changed since (found by line text and column) were run against the new code: 22 killed (the one
backward formula among them too), 5 listed as equivalent.  The hypothesis tests draw new
examples each run (the dev profile), so a mutant only a rare example catches may survive a run.
"""
import argparse
import ast
import concurrent.futures
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("tinygrad_rnn/tensor.py", "tinygrad_rnn/functional.py")
# quick, exact tests first: with -x a killed mutant stops at its first failure
TESTS = ("tests/test_engine_blind_spots.py", "tests/test_backward_basics.py", "tests/test_bad_inputs.py",
         "tests/test_outside_changes.py", "tests/test_functional.py", "tests/test_ops_gradients.py",
         "tests/test_composites.py", "tests/test_second_order.py", "tests/test_one_derivative.py")
SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "**": "*", "@": "*", "<": "<=", "<=": "<", ">": ">=",
         ">=": ">", "==": "!=", "!=": "==", "+=": "=", "-=": "+=", "&": "|", "|": "&",
         "and": "or", "or": "and", "True": "False", "False": "True", "0": "1", "1": "2", "2": "3"}


# (file, source line stripped, old, new, occurrence of `old` in the line) -> why no input tells it apart
EQUIVALENT = {
    ("tinygrad_rnn/tensor.py", "elif axis is None and not keepdims:", "and", "or", 0):
        "_sum_backward: reached only when axis is None or keepdims; with keepdims g already has the "
        "shape (1,) * ndim, so the extra reshape changes nothing",
    ("tinygrad_rnn/tensor.py", "elif key in owned and backward is None and g.dtype == node.data.dtype:",
     "==", "!=", 0):
        "backward: an owned gradient always has the leaf's dtype (every path into `owned` casts), so the "
        "mutant copies it instead of handing it over: same values, one copy more",
    ("tinygrad_rnn/tensor.py", "if pg is None or not parent.requires_grad:", "or", "and", 0):
        "backward: a gradient for an input that needs none is put among the waiting ones but never read "
        "(_topological_order visits only inputs that require grad); no operation returns None for an "
        "input that requires grad",
    ("tinygrad_rnn/tensor.py", "t._version = 0", "0", "1", 0):
        "an operation's result: the same as for a leaf below (a node that records it is made after it)",
    ("tinygrad_rnn/tensor.py", "self._version = 0", "0", "1", 0):
        "a leaf's version is only compared with the creation number of a node that records it, made "
        "after the leaf, so at least 1: a version of 1 is never above it either",
    ("tinygrad_rnn/tensor.py", "return (_rows(a) @ b).reshape(a.shape[:-1] + b.shape[-1:]) if a.ndim > 2 and "
     "b.ndim == 2 else a @ b", "-", "+", 1):
        "_folded_matmul: b is 2-d on this path, so b.shape[1:] is b.shape[-1:]",
    ("tinygrad_rnn/tensor.py", "return (_rows(a) @ b).reshape(a.shape[:-1] + b.shape[-1:]) if a.ndim > 2 and "
     "b.ndim == 2 else a @ b", ">", ">=", 0):
        "_folded_matmul: a 2-d a folded is a.reshape(-1, n) @ b reshaped to its own shape: the same product",
    ("tinygrad_rnn/tensor.py", "return m.where(mask, a, 1) ** e", "1", "2", 0):
        "_power on the graph path: the fill is used only where a == b == 0, where the exponent b - 1 is -1, "
        "so 1 ** -1 and 2 ** -1 are both finite, and the where around it in _pow_grad_base gives 0 there "
        "and passes no gradient into it",
    ("tinygrad_rnn/tensor.py", "return g * m.where(a == 0, 0, out * m.log(m.where(a == 0, 1, a)))", "1", "2", 0):
        "_pow_grad_exponent: the fill is the base only where a == 0, and the outer where gives 0 there; "
        "on the graph path that where passes exactly 0 back into the masked branch, and the fill's own "
        "gradient goes nowhere (a constant), so log 1 and log 2 give the same values and gradients",
    ("tinygrad_rnn/tensor.py",
     "return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)",
     "or", "and", 0):
        "_is_basic_index: an index with None is then scattered by np.add.at instead of +=; both give the "
        "same sums for an index that repeats no element (and a trace's time-slice rewrite takes no None)",
    ("tinygrad_rnn/tensor.py", "data = data.astype(np.float64, copy=False)", "False", "True", 0):
        "Tensor(): data is the fresh array np.array made just above; a second copy changes nothing",
    ("tinygrad_rnn/tensor.py", "self._retain_grad = False", "False", "True", 0):
        "Tensor(): a leaf has no backward, so backward keeps its gradient anyway (`backward is None or "
        "node._retain_grad`); the picture code saves and restores the flag",
    ("tinygrad_rnn/tensor.py", "return self.reshape(-1)", "1", "2", 0):
        "flatten: numpy's reshape takes any negative size as the one to infer, so -2 is -1",
    ("tinygrad_rnn/tensor.py", "if p._version > node._seq:", ">", ">=", 0):
        "_topological_order: a version is 0 or a fresh value of the creation counter, whose values are "
        "never repeated, and a linked node's number is at least 1 (it is made after an input that needs "
        "a gradient), so a version never equals a node's number",
    ("tinygrad_rnn/functional.py", "if d.size and not np.abs(d).max() <= limit:", "<=", "<", 0):
        "_tanh_factors: where max |d| == limit the branch is taken, but its mask |d| > limit selects "
        "nothing, so the factors are unchanged",
    ("tinygrad_rnn/functional.py", "huge = np.abs(d) > limit", ">", ">=", 0):
        "_tanh_factors: at |x| == max/4 exactly, expm1(-2|x|) and expm1(-|x|) are both -1 and exp of "
        "both underflows to 0: the same value and the same gradient (0) at every order",
    ("tinygrad_rnn/functional.py", "return (e * neg_sign) / (e + 2.0)", "*", "/", 0):
        "tanh: neg_sign is -1 or +1 (a constant), and e / neg_sign is e * neg_sign exactly, in values "
        "and in gradients of every order",
    ("tinygrad_rnn/functional.py", "positive = d >= 0", ">=", ">", 0):
        "_sigmoid_signs: only d == +-0 changes branch; both branches give sigmoid 0.5 with gradient 0.25 "
        "and softplus log 2 with gradient 0.5 there, and the same third derivative; the one trace left is "
        "the sign of a zero second derivative of sigmoid at 0 (-0.0 against +0.0), which compares equal",
    ("tinygrad_rnn/functional.py", "return where(positive, x, 0.0) + (x * flip).exp().log1p()", "*", "/", 0):
        "softplus: flip is -1 or +1, and x / flip is x * flip exactly (values and gradient)",
    ("tinygrad_rnn/functional.py",
     "return bool(np.isfinite(top).all() and d.min() >= np.maximum(top.max(), 0) - np.finfo(d.dtype).max)",
     ">=", ">", 0):
        "_no_overflow: at equality the careful path of _shifted is taken instead, but there no value lies "
        "below its bound (the same bound), so its lift is 0 and it gives x - top, with gradient 1, as "
        "the usual path does",
    ("tinygrad_rnn/functional.py", "lo = np.maximum(top, 0) - big", "0", "1", 0):
        "_lifting_shift: max(m, 1) - max float and max(m, 0) - max float differ only for m < 1, where both "
        "round to -max float",
    ("tinygrad_rnn/functional.py", "lift = np.where((d < lo) & (d > -np.inf), lo - d, 0)", "<", "<=", 0):
        "_lifting_shift: where d == lo the lift lo - d is 0 either way",
    ("tinygrad_rnn/functional.py", "lo = np.maximum(c, 0) - big", "0", "1", 0):
        "_logsumexp_shifts: max(c, 1) - max float and max(c, 0) - max float differ only for c < 1, where "
        "both round to -max float",
    ("tinygrad_rnn/functional.py", "index = list(np.indices(target.shape, sparse=True))", "True", "False", 0):
        "cross_entropy: the dense index arrays are the sparse ones broadcast out; the same elements are "
        "picked and the gradient's scatter adds the same terms (only memory differs)",
    ("tinygrad_rnn/functional.py", "e = (x * flip).exp()", "*", "/", 0):
        "sigmoid: flip is -1 or +1, and x / flip is x * flip exactly (values and gradient)",
    ("tinygrad_rnn/functional.py",
     "return bool(np.isfinite(top).all() and d.min() >= np.maximum(top.max(), 0) - np.finfo(d.dtype).max)",
     "0", "1", 0):
        "_no_overflow: max(m, 1) - max float and max(m, 0) - max float differ only for m < 1, where both "
        "round to -max float (floats near it are 2**971 apart)",
    ("tinygrad_rnn/tensor.py", "node = Tensor._make(np.empty(0), parents, backward, op, attrs)", "0", "1", 0):
        "_make_many: the hidden node's array is a placeholder that no backward reads; only its shape "
        "in a graph picture changes",
    ("tinygrad_rnn/tensor.py",
     "return all(p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice)) for p in parts)",
     "or", "and", 1):
        "_is_basic_index: an index with ... is then scattered by np.add.at instead of +=; both give the "
        "same sums for an index that repeats no element",
    ("tinygrad_rnn/tensor.py", 't._parents, t._backward, t._op, t._retain_grad = (), None, "const", False',
     "False", "True", 0):
        "_constant: a constant never requires grad, so backward never reaches it to keep a gradient",
    ("tinygrad_rnn/tensor.py", "t._version, t._locked = 0, array", "0", "1", 0):
        "_constant: as for a leaf, a node recording it is made after an input that needs a gradient, so "
        "its creation number is at least 1",
    ("tinygrad_rnn/tensor.py", "_last_write = -1", "-", "+", 0):
        "_last_write's first value only has to be below every linked node's creation number until the "
        "library's first write: nodes made before a write of +1 (the first tensor ever, a leaf) are checked "
        "and pass, as every version is 0 until a write",
    ("tinygrad_rnn/tensor.py", "_last_write = -1", "1", "2", 0):
        "_last_write's first value: -2, like -1, is below every creation number (see the entry above)",
    ("tinygrad_rnn/tensor.py", "if node._seq < written:", "<", "<=", 0):
        "_topological_order: _last_write is a creation-counter value taken by a write, so no tensor's "
        "creation number equals it",
}
WRONG_PACKAGE = 86        # exit status of the guard plugin: the tests imported the package from elsewhere
GUARD = f"""import os, sys
try:
    import tinygrad_rnn
except Exception:          # the mutant breaks the import itself: killed
    os._exit(1)
if not os.path.abspath(tinygrad_rnn.__file__).startswith(os.environ["MUTANT_ROOT"] + os.sep):
    sys.stderr.write("tests import tinygrad_rnn from " + tinygrad_rnn.__file__ + "\\n")
    os._exit({WRONG_PACKAGE})
"""


NOT_BACKWARD = ("no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled", "retain_grad")


def _read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def _backward_lines(source):
    """Line numbers inside backward formulas."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in NOT_BACKWARD and (
                "backward" in node.name or "_grad" in node.name
                or node.name in ("_accumulate", "_Scatter", "_unbroadcast")):
            lines.update(range(node.lineno, node.end_lineno + 1))
    for i, line in enumerate(source.splitlines(), 1):
        if "lambda g" in line:
            lines.add(i)
    return lines


def mutants(path):
    """(path, line, col, old, new, in_backward) for every token of ``path`` that has a swap."""
    source = _read(path)
    backward = _backward_lines(source)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.OP, tokenize.NAME, tokenize.NUMBER) and tok.string in SWAPS:
            line, col = tok.start
            out.append((path, line, col, tok.string, SWAPS[tok.string], line in backward))
    return out


def key(mutant):
    """What names a mutant across edits elsewhere in the file: its line's text and its place in it."""
    path, line, col, old, new, _ = mutant
    text = _read(path).splitlines()[line - 1]
    nth = sum(m[1] == line and m[3] == old and m[2] < col for m in mutants(path))
    return (path, text.split("  #")[0].strip(), old, new, nth)      # without a trailing comment


def apply(source, line, col, old, new):
    lines = source.splitlines(keepends=True)
    text = lines[line - 1]
    assert text[col:col + len(old)] == old
    lines[line - 1] = text[:col] + new + text[col + len(old):]
    return "".join(lines)


def run_one(mutant, tests, timeout):
    """'killed', 'survived' or 'timeout' (the mutant hangs the tests: counted as killed); ``mutant``
    None runs the unmutated copy."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = os.path.realpath(tmp)
        shutil.copytree(os.path.join(ROOT, "tinygrad_rnn"), os.path.join(tmp, "tinygrad_rnn"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        if mutant is not None:
            path, line, col, old, new, _ = mutant
            target = os.path.join(tmp, path)
            with open(target) as f:
                source = f.read()
            with open(target, "w") as f:
                f.write(apply(source, line, col, old, new))
        with open(os.path.join(tmp, "_mutation_guard.py"), "w") as f:
            f.write(GUARD)
        env = dict(os.environ, PYTHONPATH=tmp, MUTANT_ROOT=tmp, PYTHONDONTWRITEBYTECODE="1",
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "_mutation_guard",
               "-o", "addopts=", *[os.path.join(ROOT, t) for t in tests]]
        try:   # run from the copy: `python -m pytest` puts the working directory first on sys.path
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"
        if done.returncode == WRONG_PACKAGE:
            sys.exit(done.stderr.decode(errors="replace") + "the tests did not run the mutated copy")
        if done.returncode in (0, 1, 2):      # passed; a test failed; a collection error (the import broke)
            return "survived" if done.returncode == 0 else "killed"
        sys.exit(f"pytest exited with status {done.returncode}:\n" + done.stdout.decode(errors="replace")[-3000:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=None, help="run a random sample of this many mutants")
    p.add_argument("--all-backward", action="store_true",
                   help="run every backward-formula mutant; --sample then draws from the others only")
    p.add_argument("--mutant", action="append", default=[], help="FILE:LINE:COL, run this mutant (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant (default 120)")
    p.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    p.add_argument("--tests", default=",".join(TESTS), help="comma-separated test files")
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    args = p.parse_args(argv)
    everything = [m for f in FILES for m in mutants(f)]
    if args.mutant:
        chosen = [m for m in everything if f"{m[0]}:{m[1]}:{m[2]}" in args.mutant]
        if len(chosen) != len(args.mutant):
            sys.exit("no such mutant: " + ", ".join(set(args.mutant) - {f"{m[0]}:{m[1]}:{m[2]}" for m in chosen}))
    else:
        pool = [m for m in everything if not (args.all_backward and m[5])]
        chosen = pool if args.sample is None else random.Random(args.seed).sample(pool, min(args.sample, len(pool)))
        if args.all_backward:
            chosen = [m for m in everything if m[5]] + chosen
    if args.list:
        for m in chosen:
            print(f"{m[0]}:{m[1]}:{m[2]} {m[3]!r} -> {m[4]!r}{' (backward)' if m[5] else ''}")
        return 0
    tests = args.tests.split(",")
    if run_one(None, tests, args.timeout * 2) != "survived":
        sys.exit("the tests do not pass on the unmutated package")
    results = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        futures = {ex.submit(run_one, m, tests, args.timeout): m for m in chosen}
        for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            m, outcome = futures[fut], fut.result()
            results.append((m, outcome))
            print(f"[{i}/{len(chosen)}] {m[0]}:{m[1]}:{m[2]} {m[3]!r} -> {m[4]!r}"
                  f"{' (backward)' if m[5] else ''}: {outcome}", flush=True)
    survived = [m for m, o in results if o == "survived"]
    equivalent = [m for m in survived if key(m) in EQUIVALENT]
    timeouts = sum(o == "timeout" for _, o in results)
    killed = len(results) - len(survived)
    counted = len(results) - len(equivalent)
    back = [(m, o) for m, o in results if m[5] and key(m) not in EQUIVALENT]
    print(f"\n{len(chosen)} of {len(everything)} mutants run: {killed} killed ({timeouts} of them by a timeout), "
          f"{len(survived)} survived, {len(equivalent)} of those judged equivalent")
    print(f"score over non-equivalent mutants: {killed} of {counted} ({100 * killed / max(counted, 1):.1f}%); "
          f"backward formulas: {sum(o != 'survived' for _, o in back)} of {len(back)} killed")
    for m in survived:
        source_line = _read(m[0]).splitlines()[m[1] - 1].strip()
        why = EQUIVALENT.get(key(m))
        print(f"{'equivalent' if why else 'survived'}: {m[0]}:{m[1]}:{m[2]} {m[3]!r} -> {m[4]!r}   {source_line}"
              + (f"   ({why})" if why else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
