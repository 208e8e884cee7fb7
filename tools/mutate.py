"""Mutation testing of the engine: how many small wrong edits of tensor.py and functional.py the tests catch.

    python tools/mutate.py                      # every mutant, the engine tests, 120 s each
    python tools/mutate.py --sample 40 --seed 1 # a random sample of the mutants
    python tools/mutate.py --list               # the mutants only

A mutant is one token changed: an arithmetic or comparison operator swapped
(+ -, * /, < <=, == !=, ...), ``+=`` made ``=``, a small constant changed
(0 -> 1, 1 -> 2, 2 -> 3), ``True``/``False`` or ``and``/``or`` swapped, ``is`` and
``is not`` swapped.  Each is written into a copy of the package and the tests
run against it (``-x``, with a timeout); a mutant is killed when they fail.
Mutants on lines of backward formulas (functions named ``*backward*``,
``*_grad*``, ``_accumulate``, ``_Scatter``, and ``lambda g`` lines) are counted
apart.  An on-demand tool: not part of CI (a full run takes a long time).
"""
import argparse
import ast
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("tinygrad_rnn/tensor.py", "tinygrad_rnn/functional.py")
TESTS = ("tests/test_backward_basics.py", "tests/test_engine_blind_spots.py", "tests/test_outside_changes.py",
         "tests/test_functional.py", "tests/test_ops_gradients.py", "tests/test_bad_inputs.py")
SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "**": "*", "@": "*", "<": "<=", "<=": "<", ">": ">=",
         ">=": ">", "==": "!=", "!=": "==", "+=": "=", "-=": "+=", "&": "|", "|": "&",
         "and": "or", "or": "and", "True": "False", "False": "True", "0": "1", "1": "2", "2": "3"}


def _backward_lines(source):
    """Line numbers inside backward formulas."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and (
                "backward" in node.name or "_grad" in node.name or node.name in ("_accumulate", "_Scatter")):
            lines.update(range(node.lineno, node.end_lineno + 1))
    for i, line in enumerate(source.splitlines(), 1):
        if "lambda g" in line:
            lines.add(i)
    return lines


def mutants(path):
    """(path, line, col, old, new, in_backward) for every token of ``path`` that has a swap."""
    source = Path(ROOT, path).read_text()
    backward = _backward_lines(source)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.OP, tokenize.NAME, tokenize.NUMBER) and tok.string in SWAPS:
            line, col = tok.start
            out.append((path, line, col, tok.string, SWAPS[tok.string], line in backward))
    return out


def apply(source, line, col, old, new):
    lines = source.splitlines(keepends=True)
    text = lines[line - 1]
    assert text[col:col + len(old)] == old
    lines[line - 1] = text[:col] + new + text[col + len(old):]
    return "".join(lines)


def run_one(mutant, tests, timeout):
    path, line, col, old, new, _ = mutant
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(ROOT, "tinygrad_rnn"), os.path.join(tmp, "tinygrad_rnn"))
        target = os.path.join(tmp, path)
        with open(target) as f:
            source = f.read()
        with open(target, "w") as f:
            f.write(apply(source, line, col, old, new))
        env = dict(os.environ, PYTHONPATH=tmp, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               *[os.path.join(ROOT, t) for t in tests]]
        try:   # run from the copy: `python -m pytest` puts the working directory first on sys.path
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"          # counted as killed: the mutant hangs the tests
        return "survived" if done.returncode == 0 else "killed"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=None, help="run a random sample of this many mutants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant (default 120)")
    p.add_argument("--tests", default=",".join(TESTS), help="comma-separated test files")
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    args = p.parse_args(argv)
    everything = [m for f in FILES for m in mutants(f)]
    chosen = everything if args.sample is None else random.Random(args.seed).sample(
        everything, min(args.sample, len(everything)))
    if args.list:
        for m in chosen:
            print(f"{m[0]}:{m[1]}:{m[2]} {m[3]!r} -> {m[4]!r}{' (backward)' if m[5] else ''}")
        return 0
    results = []
    for i, m in enumerate(chosen, 1):
        outcome = run_one(m, args.tests.split(","), args.timeout)
        results.append((m, outcome))
        print(f"[{i}/{len(chosen)}] {m[0]}:{m[1]} {m[3]!r} -> {m[4]!r}: {outcome}", flush=True)
    killed = sum(o != "survived" for _, o in results)
    back = [(m, o) for m, o in results if m[5]]
    print(f"\n{len(chosen)} of {len(everything)} mutants run: {killed} killed "
          f"({100 * killed / max(len(results), 1):.1f}%); backward formulas: "
          f"{sum(o != 'survived' for _, o in back)} of {len(back)} killed")
    for m, o in results:
        if o == "survived":
            source_line = Path(ROOT, m[0]).read_text().splitlines()[m[1] - 1].strip()
            print(f"survived: {m[0]}:{m[1]} {m[3]!r} -> {m[4]!r}   {source_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
