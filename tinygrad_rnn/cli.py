"""The ``tinygrad-rnn`` command: train, sample, gradcheck, bptt, graph.

Every subcommand runs with no arguments on built-in defaults.  A bad argument
gives one line on stderr and exit status 2; a failed gradient check, or a
training run whose loss diverged, exits 1; Ctrl-C exits 130.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np

__all__ = ["main"]


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _number(convert, least, strict=False, most=2**62):
    """An argparse type: ``convert(text)``, finite, at least ``least`` (above it when ``strict``), at most ``most``."""
    kind = "a whole number" if convert is int else "a number"
    bound = "a positive number" if strict else f"a number of at least {least}"

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not ((convert is int or np.isfinite(value)) and (value > least if strict else value >= least)):
            raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}")
        if convert is int and value > most:
            raise argparse.ArgumentTypeError(f"expected {kind} of at most {most}, got {text!r}")
        return value
    return parse


def _radii(text):
    """An argparse type: comma-separated positive numbers."""
    parse = _number(float, 0, strict=True)
    values = tuple(parse(part.strip()) for part in text.split(","))
    if len(values) > 8:
        raise argparse.ArgumentTypeError(f"expected at most 8 radii, got {len(values)}")
    return values


_ROWS = 40   # rows of the bptt table without --all
_positive_int = _number(int, 1)
_count = _number(int, 0)
_seed = _number(int, 0, most=2**63 - 1)
_positive_float = _number(float, 0, strict=True)
_nonnegative_float = _number(float, 0)


def _build_parser():
    parser = _Parser(prog="tinygrad-rnn", description="Recurrent networks on a small numpy autograd engine.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from . import nn
    from .training import TrainConfig
    d = TrainConfig()
    cells = ", ".join(nn.CELLS)
    p = sub.add_parser("train", help="train a character language model (default: on the shipped corpus)",
                       description="Train a character-level language model with truncated BPTT. With no "
                                   "arguments it trains on the English corpus shipped in the package.")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text to train on (default: the shipped corpus)")
    p.add_argument("--cell", default=d.cell, help=f"{cells}, or MODULE:CALLABLE for your own cell, "
                   "called as CALLABLE(input_size, hidden_size, rng=..., dtype=...) (default: %(default)s)")
    p.add_argument("--hidden-size", type=_positive_int, default=d.hidden_size, help="default: %(default)s")
    p.add_argument("--embed-size", type=_positive_int, default=d.embed_size, help="default: %(default)s")
    p.add_argument("--seq-len", type=_positive_int, default=d.seq_len,
                   help="time steps per truncated-BPTT chunk (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="default: %(default)s")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer, help="default: %(default)s")
    p.add_argument("--lr", type=_positive_float, default=d.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default: %(default)s)")
    p.add_argument("--epochs", type=_number(int, 1, most=10**6), default=d.epochs, help="default: %(default)s")
    p.add_argument("--max-steps", type=_count, default=d.max_steps,
                   help="stop after this many updates (default: 0, no limit)")
    p.add_argument("--clip", type=_nonnegative_float, default=d.clip,
                   help="clip the gradient norm to this (0: off; default: %(default)s)")
    p.add_argument("--seed", type=_seed, default=d.seed, help="default: %(default)s")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype, help="default: %(default)s")
    p.add_argument("--expanded", action="store_true",
                   help="run tanh, the cells and the loss node by node instead of compiled (slower, same numbers)")
    p.add_argument("--trace", action="store_true",
                   help="run each step as a traced program, numpy code written once from the first step "
                        "(same numbers, less time per step), saved as traced_step.py next to the checkpoint")
    p.add_argument("--blas-threads", type=_positive_int, default=1,
                   help="threads for numpy's matrix products (default: %(default)s, fastest for small models)")
    p.add_argument("--out", default="runs/charlm", metavar="DIR",
                   help="where the checkpoint, metrics and plot go (default: %(default)s)")
    p.add_argument("--resume", metavar="CHECKPOINT",
                   help="continue the run saved in this checkpoint, with its settings (only --epochs, "
                        "--max-steps, --trace, --sample-length and --temperature may differ; give its --text)")
    p.add_argument("--overwrite", action="store_true",
                   help="let a new run replace the run in --out (its files are replaced at the first checkpoint)")
    p.add_argument("--sample-length", type=_positive_int, default=d.sample_length, help="default: %(default)s")
    p.add_argument("--temperature", type=_positive_float, default=d.temperature, help="default: %(default)s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Generate text from a checkpoint written by train.")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--length", type=_positive_int, default=300, help="characters to generate (default: %(default)s)")
    p.add_argument("--temperature", type=_positive_float, default=0.8, help="default: %(default)s")
    p.add_argument("--prime", default="", help="text to start from (default: a random character)")
    p.add_argument("--seed", type=_seed, default=None, help="random seed (default: fresh)")
    p.add_argument("--cell", metavar="MODULE:CALLABLE",
                   help="the cell of your own that the model was trained with (a checkpoint names only "
                        "built-in cells by itself: loading one never imports a module)")
    p.set_defaults(run=_sample)

    p = sub.add_parser("gradcheck", help="check a cell's gradients against finite differences",
                       description="Unroll a cell over a few steps in float64 and compare autograd with "
                                   "central finite differences for every parameter, the inputs and the "
                                   "initial state. Exit status 1 when a gradient disagrees.")
    p.add_argument("--cell", default="rnn", help=f"{cells} or MODULE:CALLABLE (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=4, help="time steps (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=2, help="default: %(default)s")
    p.add_argument("--input-size", type=_positive_int, default=3, help="default: %(default)s")
    p.add_argument("--hidden-size", type=_positive_int, default=4, help="default: %(default)s")
    p.add_argument("--seed", type=_seed, default=0, help="default: %(default)s")
    p.set_defaults(run=_gradcheck)

    p = sub.add_parser("bptt", help="hand-derived BPTT next to autograd, and gradients through time",
                       description="On the textbook 'hello' network, print the hand-derived BPTT gradients "
                                   "next to autograd's; then the norm of dL/dh_t for every step t of a long "
                                   "sequence, for small and large recurrent weights (vanishing and "
                                   "exploding gradients).")
    p.add_argument("--hidden-size", type=_positive_int, default=3, help="hello network (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=40, help="long sequence length (default: %(default)s)")
    p.add_argument("--seed", type=_seed, default=0, help="default: %(default)s")
    p.add_argument("--radii", type=_radii, default=(0.7, 1.0, 1.3), metavar="R,R,...",
                   help="spectral radii of the recurrent weights, one curve each (default: 0.7,1.0,1.3)")
    p.add_argument("--all", action="store_true", help=f"print every step (default: at most {_ROWS} rows)")
    p.add_argument("--out", default="runs", metavar="DIR", help="where the PNG goes (default: %(default)s)")
    p.set_defaults(run=_bptt)

    p = sub.add_parser("graph", help="draw a cell's unrolled computation graph (Graphviz DOT)",
                       description="Write the graph of a cell unrolled over T steps as DOT, with time steps "
                                   "in boxes and gradient norms after backward; SVG too when Graphviz's "
                                   "dot program is installed.")
    p.add_argument("--cell", default="rnn", help=f"{cells} or MODULE:CALLABLE (default: %(default)s)")
    p.add_argument("--steps", type=_positive_int, default=4, help="time steps (default: %(default)s)")
    p.add_argument("--input-size", type=_positive_int, default=3, help="default: %(default)s")
    p.add_argument("--hidden-size", type=_positive_int, default=4, help="default: %(default)s")
    p.add_argument("--output", default=os.path.join("runs", "graph.dot"), metavar="FILE",
                   help="default: %(default)s")
    p.add_argument("--seed", type=_seed, default=0, help="default: %(default)s")
    p.add_argument("--no-render", action="store_true", help="write the DOT only (rendering many steps takes minutes)")
    p.add_argument("--html", action="store_true", help="also write an interactive page (graph.html next to the "
                   "DOT file): click a node for its value and gradient, replay backward step by step")
    p.add_argument("--expand", action="store_true", help="draw each compiled composition (rnn_cell, tanh, ...) as "
                   "the primitive operations it is made of, in a box labelled with its name, instead of one node")
    p.set_defaults(run=_graph)
    parser.commands = sub.choices
    return parser


_UNSET = object()


def _given(argv, command):
    """The options of ``command`` that ``argv`` gives (not left to their defaults)."""
    parser = _build_parser()
    for action in parser.commands[command]._actions:
        action.default = _UNSET
    return {k for k, v in vars(parser.parse_args(argv)).items() if v is not _UNSET}


# ---------------------------------------------------------------------- subcommands
def _train(args):
    import dataclasses
    from .data import default_corpus, read_text
    from .blas import limit_blas_threads
    from .training import TrainConfig, train
    limit_blas_threads(args.blas_threads)
    text = read_text(args.text) if args.text else default_corpus()
    source = repr(os.path.basename(args.text)) if args.text else "the shipped corpus"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if args.resume:
        # only what the command line gives is compared with the checkpoint: the defaults say nothing
        given = {k: getattr(args, k) for k in _given(args.argv, "train") & fields}
        result = train(text, resume=args.resume, out_dir=args.out, progress=not args.no_progress,
                       overrides=given, overwrite=args.overwrite, source=source)
    else:
        config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        result = train(text, config, out_dir=args.out, progress=not args.no_progress, overwrite=args.overwrite,
                       source=source)
    if result["checkpoint"]:
        print(f"validation perplexity {result['valid_perplexity']:.2f} "
              f"(unigram baseline {result['unigram_perplexity']:.2f}) after {result['saved_epoch']} epochs, "
              f"{result['saved_step']} steps")
    else:
        print(f"no checkpoint written in {args.out}")
    if result["checkpoint"] and result["history"]:   # a picture of the run on disk, with matplotlib
        from .viz import plot_training
        result["plot"] = plot_training(result["history"], os.path.join(args.out, "training.png"),
                                       result["unigram_perplexity"])
    for key in ("checkpoint", "metrics", "program", "plot"):
        if result.get(key):
            print(f"{key}: {result[key]}")
    return 130 if result["interrupted"] else 0


def _sample(args):
    from .training import load_checkpoint, sample_stream
    model, vocab, _, _, _ = load_checkpoint(args.checkpoint, cell=args.cell)
    out, pending = sys.stdout, 0
    for piece in sample_stream(model, vocab, args.length, args.temperature, args.prime, rng=args.seed):
        out.write(piece)
        pending += len(piece)
        if pending >= 64 or "\n" in piece:   # streamed: a long sample shows as it is drawn
            out.flush()
            pending = 0
    out.write("\n")
    return 0


def _small_cell(spec, input_size, hidden_size, seed):
    from .training import make_cell
    return make_cell(spec, input_size, hidden_size, np.random.default_rng(seed), np.float64)


def _gradcheck(args):
    from . import nn
    from .checking import gradcheck_report
    from .tensor import Tensor
    cell = _small_cell(args.cell, args.input_size, args.hidden_size, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    xs = Tensor(rng.normal(size=(args.batch_size, args.steps, args.input_size)), requires_grad=True, name="xs")
    start = cell.initial_state(args.batch_size) if hasattr(cell, "initial_state") else None
    states = list(start) if isinstance(start, tuple) else ([start] if start is not None else [])
    states = [Tensor(rng.normal(size=s.shape) * 0.5, requires_grad=True, name=f"state{i}")
              for i, s in enumerate(states)]
    # each step's output weighted differently, so every step's gradient is checked
    weights = Tensor(rng.normal(size=(args.batch_size, args.steps, args.hidden_size)))

    def loss(xs, *state):
        initial = tuple(state) if len(state) > 1 else (state[0] if state else None)
        hs, _ = nn.unroll(cell, xs, initial)
        return (hs * weights).sum()

    try:
        report = gradcheck_report(loss, xs, *states, params=dict(cell.named_parameters()), atol=1e-6, rtol=1e-4)
    except Exception as e:   # the cell crashed (its forward or backward): that is no gradient mismatch
        raise UsageError(f"tinygrad-rnn gradcheck: cell {args.cell!r} failed while being checked: "
                         f"{type(e).__name__}: {e}") from None
    print(f"{args.cell} cell, {args.steps} steps, batch {args.batch_size}, input {args.input_size}, "
          f"hidden {args.hidden_size}, float64: autograd against central differences")
    print(report)
    print("all gradients agree" if report.passed else report.failure_message())
    return 0 if report.passed else 1


def _bptt(args):
    from . import nn
    from .checking import compare_grads
    from .reference import hello_rnn
    from .tensor import Tensor
    from .viz import gradient_through_time, plot_gradient_norms
    import tinygrad_rnn.functional as F

    _check_folder(args.out, "--out")
    X, Y = hello_rnn.hello_data()
    params = hello_rnn.init_params(args.hidden_size)
    hand_loss, hand = hello_rnn.loss_and_grads(params, X, Y)
    tensors = {k: Tensor(v, requires_grad=True, name=k) for k, v in params.items()}
    h = Tensor(np.zeros((1, args.hidden_size)))
    loss = 0
    for t in range(len(X)):
        h = F.tanh(Tensor(X[t:t + 1]) @ tensors["Wxh"] + h @ tensors["Whh"] + tensors["Bh"])
        loss = loss + F.cross_entropy(h @ tensors["Wy"] + tensors["By"], Y[t:t + 1], reduction="sum")
    print(f"The 'hello' network (hidden {args.hidden_size}, seed {hello_rnn.SEED}): "
          f"loss {loss.item():.15g} by graph, {hand_loss:.15g} by hand")
    print("Hand-derived BPTT (the textbook's) against autograd's backward through the graph:")
    report = compare_grads(loss, tensors, hand)
    print(report)

    # tiny inputs keep tanh in its linear range over the whole sequence, where dL/dh_t behaves like Wh^(T-t):
    # it shrinks or grows geometrically with Wh's spectral radius
    rng = np.random.default_rng(args.seed)
    xs = Tensor(rng.normal(size=(1, args.steps, 4)) * 1e-9)
    radii = ", ".join(map(str, args.radii))
    print(f"\nGradient through time: |dL/dh_t| with L the sum of h_T (T = {args.steps - 1}), for a tanh RNN "
          f"whose recurrent weights Wh have spectral radius {radii}")
    curves, notes = {}, []
    for radius in args.radii:
        label = f"radius {radius}" + (" (vanishing)" if radius < 1 else " (exploding)" if radius > 1 else "")
        cell = nn.RNNCell(4, 16, rng=np.random.default_rng(args.seed))
        cell.Wh.data *= radius / np.abs(np.linalg.eigvals(cell.Wh.data)).max()
        # the geometric picture holds while tanh is near-linear; once |h_t| nears 1, tanh' nears 0 and
        # the gradient through those steps collapses: the curve is then named for what it shows
        saturated = _saturation_step(cell, xs)
        if saturated is not None:
            label = f"radius {radius} (tanh saturated)"
            notes.append(f"radius {radius}: |h_t| passes 0.5 at t = {saturated}, where tanh starts to saturate; "
                         f"tanh' shrinks towards 0 there, so the gradient falls again instead of growing "
                         f"(fewer --steps show the geometric regime)")
        curves[label] = gradient_through_time(cell, xs)
    names = list(curves)
    print("  t  " + "  ".join(f"{n:>22}" for n in names))
    shown = range(args.steps)
    if not args.all and args.steps > _ROWS:   # evenly spread rows, the first and the last among them
        shown = sorted(set(np.linspace(0, args.steps - 1, _ROWS).round().astype(int).tolist()))
    for t in shown:
        print(f"{t:3d}  " + "  ".join(f"{curves[n][t]:22.4g}" for n in names))
    if len(shown) < args.steps:
        print(f"({len(shown)} of {args.steps} steps shown; --all prints every one)")
    for note in notes:
        print(f"note: {note}")
    png = plot_gradient_norms(curves, os.path.join(args.out, "gradient_through_time.png"))
    if png:
        print(f"plot: {png}")
    return 0 if report.passed else 1


def _saturation_step(cell, xs):
    """The first step t at which the cell's state has an entry of size above 0.5 (None if never)."""
    from .tensor import no_grad
    with no_grad():
        h = cell.initial_state(xs.shape[0])
        for t in range(xs.shape[1]):
            h = cell(xs[:, t], h)
            if np.abs(h.data).max() > 0.5:
                return t
    return None


def _check_folder(path, option):
    """Make the folder ``path`` (given with ``option``), before any work: a file in its way is a bad argument."""
    if not path:
        raise UsageError(f"tinygrad-rnn: {option} must name a folder, got ''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"tinygrad-rnn: {option} {path!r} is a file, not a folder")
    os.makedirs(path, exist_ok=True)


def _graph(args):
    from .tensor import Tensor
    from .viz import retain_all_grads, to_dot
    if not args.output or os.path.isdir(args.output):
        raise UsageError(f"tinygrad-rnn graph: --output must name a file, got {args.output!r}")
    cell = _small_cell(args.cell, args.input_size, args.hidden_size, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    xs = Tensor(rng.normal(size=(1, args.steps, args.input_size)), name="xs")
    state = cell.initial_state(1) if hasattr(cell, "initial_state") else None
    for i, s in enumerate(state if isinstance(state, (tuple, list)) else [state]):
        if s is not None:
            s.name = f"{'hc'[i] if i < 2 else 's' + str(i)}(-1)"   # the initial state: h(-1), c(-1)
    hs = []
    for t in range(args.steps):
        x_t = xs[:, t]
        x_t.name = f"x({t})"
        state = cell(x_t, state)
        for i, s in enumerate(state if isinstance(state, (tuple, list)) else [state]):
            if s.name is None:
                s.name = f"{'hc'[i] if i < 2 else 's' + str(i)}({t})"   # h(t), c(t): drawn as "h(t) = rnn_cell"
        hs.append(state[0] if isinstance(state, (tuple, list)) else state)
    h = hs[-1]
    loss = (h * h).sum()
    loss.name = "loss"
    retain_all_grads(loss)
    loss.backward(retain_graph=True)
    dot = to_dot(loss, steps=hs, names=dict(cell.named_parameters()), expand=args.expand,
                 title=f"{args.cell} cell unrolled over {args.steps} steps")
    directory = os.path.dirname(args.output)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(args.output, "w") as f:
        f.write(dot)
    print(f"wrote {args.output} ({dot.count('->')} edges)")
    if args.html:
        from .viz import to_html
        page = os.path.splitext(args.output)[0] + ".html"
        with open(page, "w", encoding="utf-8") as f:
            f.write(to_html(loss, steps=hs, names=dict(cell.named_parameters()),
                            title=f"{args.cell} cell unrolled over {args.steps} steps"))
        print(f"wrote {page} (open it in a browser)")
    if args.no_render:
        return 0
    exe = shutil.which("dot")
    if exe:
        svg = os.path.splitext(args.output)[0] + ".svg"
        print(f"rendering {svg} with Graphviz (a large graph takes minutes; --no-render skips this) ...", flush=True)
        try:   # the program found, not whatever "dot" the system would look up again
            done = subprocess.run([exe, "-Tsvg", args.output, "-o", svg], capture_output=True, text=True)
        except OSError as e:   # found on PATH but cannot be run
            done = subprocess.CompletedProcess(["dot"], 1, "", f"cannot run dot: {e}")
        if done.returncode == 0:
            print(f"wrote {svg}")
        else:   # the DOT file is written all the same; rendering it is a convenience
            print(f"tinygrad-rnn: Graphviz could not render {args.output}: {done.stderr.strip()[:200]}",
                  file=sys.stderr)
    else:
        print(f"install Graphviz (the dot program) to render it, e.g. dot -Tsvg {args.output} -o graph.svg")
    return 0


def _after_ctrl_c(command):
    """The command was interrupted and has settled its files.  Run as the program (``command``: ``main()``
    reading ``sys.argv``, which exits next), a further Ctrl-C now ends the process by the signal itself,
    rather than as a KeyboardInterrupt raised inside whatever the interpreter is tearing down (a weakref
    callback, which would print a traceback and go on); called from Python, the caller's handler stays."""
    if command and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return 130


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 1 a check failed or the loss diverged, 2 bad input,
    130 Ctrl-C)."""
    from .data import DataError
    from .training import CheckpointError, Diverged
    parser = _build_parser()
    command = argv is None
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = parser.parse_args(argv)
        args.argv = argv
        status = args.run(args)
        return _after_ctrl_c(command) if status == 130 else status
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"tinygrad-rnn: stopped: {e}", file=sys.stderr)
        return 1
    except MemoryError as e:
        print(f"tinygrad-rnn: error: out of memory{f' ({e})' if str(e) else ''}; try smaller sizes",
              file=sys.stderr)
        return 2
    except (DataError, CheckpointError, ValueError) as e:
        print(f"tinygrad-rnn: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a file or folder that cannot be read or written
        where = f" {e.filename!r}" if e.filename else ""
        print(f"tinygrad-rnn: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        status = _after_ctrl_c(command)
        print("tinygrad-rnn: interrupted", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
