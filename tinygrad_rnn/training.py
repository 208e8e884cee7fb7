"""Training a character language model with truncated BPTT: the model, the loop, checkpoints, sampling.

The model is Embedding -> RNN(cell, stateful) -> Linear, as Deep Learning from
Scratch 2's SimpleRnnlm.  A checkpoint is one ``.npz`` holding the parameters,
the optimiser's state and a JSON string (vocabulary, configuration, progress),
so that loading it never runs code: a checkpoint may name a built-in cell, and
a cell of the user's own is given again by the user when loading.

A run's folder holds ``model.npz`` and ``metrics.jsonl``, written together at
the end of each epoch (each file whole, through a temporary file and a rename),
and a lock file while the run is going.
"""
import contextlib
import dataclasses
import glob
import hashlib
import importlib
import importlib.util
import json
import math
import numbers
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from . import functional as F
from . import composites, nn, optim
from .data import DataError, Vocab, bptt_batches, check_text, split, unigram_perplexity
from .nn.module import read_npz
from .tensor import no_grad
from .tracing import trace

__all__ = ["TrainConfig", "CharLM", "TracedStep", "make_cell", "train", "evaluate", "sample", "sample_stream",
           "save_checkpoint", "load_checkpoint", "CheckpointError", "RunError", "Diverged",
           "RESUMABLE"]

CHECKPOINT_FORMAT = "tinygrad_rnn.charlm/1"
# the settings a resumed run may change: when to stop, how to run a step, what to print
RESUMABLE = ("epochs", "max_steps", "trace", "expanded", "sample_length", "temperature")
CHECKPOINT, METRICS, LOCK, PROGRAM = "model.npz", "metrics.jsonl", "train.lock", "traced_step.py"


class CheckpointError(ValueError):
    """A checkpoint file that is not one of ours, or does not fit."""


class RunError(ValueError):
    """A run that must not start: its folder holds another run or is in use, or resuming contradicts it."""


class Diverged(ArithmeticError):
    """The loss or the gradient became NaN or infinite; the run stopped before writing anything."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the checkpoint, so a resumed run keeps it.

    The defaults are the command line's: an LSTM of 192 units trained with Adam
    for 16 epochs of truncated BPTT (32 lanes of 32 steps), which takes under a
    minute of one CPU core on the shipped corpus.  ``check()`` raises ValueError
    naming the first field out of range.
    """
    cell: str = "lstm"            # rnn, lstm, gru or MODULE:CALLABLE
    hidden_size: int = 192
    embed_size: int = 32
    seq_len: int = 32
    batch_size: int = 32
    optimizer: str = "adam"       # adam or sgd
    lr: float = 0.005
    momentum: float = 0.9         # sgd only
    epochs: int = 16
    max_steps: int = 0            # stop after this many updates in all (0: no limit)
    clip: float = 5.0             # gradient-norm clipping (0: off)
    seed: int = 0
    valid_fraction: float = 0.1
    dtype: str = "float32"
    expanded: bool = False        # run the compiled compositions node by node (slower, same numbers)
    trace: bool = False           # run each step as a traced program (tinygrad_rnn.trace): same numbers
    sample_length: int = 200
    temperature: float = 0.8
    max_valid_chars: int = 100_000   # validation reads at most this many characters (an epoch's last step)

    def check(self):
        """Raise ValueError for a field of the wrong type or out of range; returns the config."""
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), type(field.default)
            if kind in (int, float):   # numpy's numbers too; True is no number here
                number = numbers.Integral if kind is int else numbers.Real
                fits = isinstance(value, number) and not isinstance(value, (bool, np.bool_))
            else:
                fits = isinstance(value, (bool, np.bool_) if kind is bool else kind)
            try:
                if fits and kind in (int, float, bool):
                    setattr(self, field.name, kind(value))   # plain Python values: JSON writes those
            except OverflowError:   # an int too large for a float
                fits = False
            if not fits:
                raise ValueError(f"{field.name.replace('_', '-')} must be {kind.__name__}, got {value!r}")
        positive = ("hidden_size", "embed_size", "seq_len", "batch_size", "epochs", "sample_length",
                    "max_valid_chars")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed must not be negative, got {self.seed}")
        if not all(math.isfinite(getattr(self, k)) for k in ("lr", "momentum", "clip", "temperature")):
            raise ValueError("lr, momentum, clip and temperature must be finite numbers")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_steps < 0 or self.clip < 0:
            raise ValueError("max-steps and clip must not be negative")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {self.dtype!r}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid-fraction must be between 0 and 1, got {self.valid_fraction}")
        return self


def make_cell(spec, input_size, hidden_size, rng, dtype):
    """A cell from ``rnn``, ``lstm``, ``gru`` or ``MODULE:CALLABLE`` (``MODULE`` may be a ``.py`` file).

    ``CALLABLE`` is called as ``CALLABLE(input_size, hidden_size, rng=rng, dtype=dtype)``
    and must return a cell: a Module whose ``forward(x, state)`` returns the new
    state (its parameters are found as usual).  A cell class such as
    ``nn.GRUCell`` fits this directly.  A cell of the user's own is run once on a
    batch of zeros, so that a ``forward`` that fails or returns the wrong thing is
    reported here, in one ValueError naming the cell, rather than deep in training.
    """
    if spec in nn.CELLS:
        return nn.CELLS[spec](input_size, hidden_size, rng=rng, dtype=dtype)
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"unknown cell {spec!r}: use {', '.join(nn.CELLS)} or MODULE:CALLABLE")
    module_name, _, attr = spec.rpartition(":")
    try:
        module = _import_user_module(module_name)
    except Exception as e:   # ImportError, or any error raised by the user's module while it loads
        raise ValueError(f"cell {spec!r}: cannot import module {module_name!r} ({type(e).__name__}: {e})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"cell {spec!r}: module {module_name!r} has no attribute {attr!r}")
    try:
        cell = factory(input_size, hidden_size, rng=rng, dtype=dtype)
    except Exception as e:   # the user's code: report it in one line, with its own message
        raise ValueError(f"cell {spec!r}: {attr}(input_size, hidden_size, rng=..., dtype=...) failed: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(cell, nn.Module):
        raise ValueError(f"cell {spec!r}: {attr}(input_size, hidden_size, rng=, dtype=) must return "
                         f"an nn.Module cell, got {type(cell).__name__}")
    if not cell.parameters():
        raise ValueError(f"cell {spec!r}: the cell has no parameters to train")
    _probe_cell(cell, spec, input_size, hidden_size, dtype)
    return cell


def _probe_cell(cell, spec, input_size, hidden_size, dtype):
    """Two steps of ``cell`` on zeros: each must give a (batch, hidden_size) Tensor, or a tuple starting with one."""
    from .tensor import Tensor
    batch = 2
    x = Tensor(np.zeros((batch, input_size), dtype=np.dtype(dtype or np.float64)))
    state = None
    with no_grad():
        for step in range(2):
            try:
                if step == 0 and hasattr(cell, "initial_state"):
                    state = cell.initial_state(batch)
                state = cell(x, state)
            except Exception as e:   # the user's code: named, in one line
                raise ValueError(f"cell {spec!r}: forward(x, state) failed on a batch of zeros of shape "
                                 f"{x.shape}: {type(e).__name__}: {e}") from None
            h = state[0] if isinstance(state, (tuple, list)) and state else state
            if not isinstance(h, Tensor):
                raise ValueError(f"cell {spec!r}: forward(x, state) must return the new state, a Tensor or a "
                                 f"tuple whose first element is one; it returned {type(state).__name__}")
            if h.shape != (batch, hidden_size):
                raise ValueError(f"cell {spec!r}: forward(x, state) returned a state of shape {h.shape}; "
                                 f"expected (batch, hidden_size) = {(batch, hidden_size)}")


def _import_user_module(name):
    """``name`` as a module (``mycells``, ``pkg.cells``) or a file (``path/to/cells.py``).

    The current folder is searched too, as ``python -m`` would (the installed
    ``tinygrad-rnn`` script does not put it on ``sys.path``).
    """
    if name.endswith(".py"):
        if not os.path.isfile(name):
            raise ImportError(f"no file {name!r}")
        module_id = "tinygrad_rnn_user_cell_" + os.path.splitext(os.path.basename(name))[0]
        spec = importlib.util.spec_from_file_location(module_id, name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_id] = module
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    return importlib.import_module(name)


def _check_model_fits(vocab_size, config):
    """Raise ValueError when the model, its gradients and the optimiser's state would not fit in memory."""
    gates = {"rnn": 1, "gru": 3}.get(config.cell, 4)   # a cell of the user's own: counted as an LSTM
    v, e, h = vocab_size, config.embed_size, config.hidden_size
    count = v * e + gates * h * (e + h + 2) + h * v + v
    need = count * np.dtype(config.dtype).itemsize * 4   # parameters, gradients, two moments
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):   # not a POSIX system: numpy's MemoryError tells
        return
    if need > have:
        raise ValueError(f"a model of hidden-size {h} and embed-size {e} has {count:.3g} parameters and needs "
                         f"about {need / 2**30:.3g} GiB with its gradients and optimiser state; this machine "
                         f"has {have / 2**30:.3g} GiB: use a smaller hidden-size or embed-size")


class CharLM(nn.Module):
    """Embedding -> stateful RNN over the cell -> Linear to one logit per character."""

    def __init__(self, vocab_size, config, rng=None):
        _check_model_fits(vocab_size, config)
        rng = nn.init.as_rng(config.seed if rng is None else rng)
        dtype = np.dtype(config.dtype)
        self.embed = nn.Embedding(vocab_size, config.embed_size, rng=rng, dtype=dtype)
        self.rnn = nn.RNN(make_cell(config.cell, config.embed_size, config.hidden_size, rng, dtype),
                          stateful=True)
        self.out = nn.Linear(config.hidden_size, vocab_size, rng=rng, dtype=dtype)

    def forward(self, ids):
        """Logits (batch, time, vocabulary) for integer ids (batch, time); the RNN state carries over."""
        hs, _ = self.rnn(self.embed(ids))
        return self.out(hs)

    def reset_state(self):
        """Start the next call from a zero state (the start of an epoch, or of a text)."""
        self.rnn.reset_state()


class TracedStep:
    """A training step of ``model`` (forward and backward) run as a traced program.

    The program is written on the first call (``tinygrad_rnn.trace``) and gives
    the eager step's numbers to the last bit.  The RNN's carried state goes in
    and comes out of it as arrays: the program cannot keep Python state itself.
    ``reset()`` starts again from zeros, as ``model.rnn.reset_state()`` does.
    """

    def __init__(self, model):
        if not hasattr(model.rnn.cell, "initial_state"):
            raise ValueError("trace: the cell needs an initial_state(batch) method giving its zero state")
        self.model, self.program, self.state = model, None, None

    def reset(self):
        self.state = None

    def _loss(self, ids, targets, *state):
        model = self.model
        hs, last = nn.unroll(model.rnn.cell, model.embed(ids), state[0] if len(state) == 1 else state)
        last = tuple(last) if isinstance(last, (tuple, list)) else (last,)
        return (F.cross_entropy(model.out(hs), targets),) + tuple(s.detach() for s in last)

    def __call__(self, ids, targets):
        """Accumulate the gradients of the loss on ``(ids, targets)`` into the parameters; return the loss."""
        if self.state is None:
            start = self.model.rnn.cell.initial_state(len(ids))
            self.state = tuple(s.data for s in (start if isinstance(start, (tuple, list)) else (start,)))
        if self.program is None:
            self.program = trace(self._loss, ids, targets, *self.state, names=self.model)
        loss, *state = self.program(ids, targets, *self.state)
        self.state = tuple(state)
        return float(loss)

    def program_source(self):
        """The traced step as a standalone numpy module (what ``trace(...).save`` writes)."""
        if self.program is None:
            raise ValueError("TracedStep: no step has run yet, so there is no program")
        with tempfile.TemporaryDirectory() as folder:
            with open(self.program.save(os.path.join(folder, PROGRAM))) as f:
                return f.read()


def _make_optimizer(params, config):
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr)
    return optim.SGD(params, lr=config.lr, momentum=config.momentum)


def _exp(x):
    """``math.exp`` that gives inf instead of raising OverflowError (a perplexity of a diverging model)."""
    return math.exp(x) if x < 709 else float("inf")


def evaluate(model, ids, seq_len=64, lanes=8):
    """Perplexity of ``model`` on ``ids`` (no gradient): exp of the mean cross-entropy per character.

    The text is cut into ``lanes`` consecutive pieces read in parallel, each from
    a zero state carried across chunks of ``seq_len`` steps (one lane per piece of
    at least 64 characters, so a short text is read in one lane).
    """
    ids = np.asarray(ids)
    if len(ids) < 2:
        return float("nan")
    lanes = max(1, min(lanes, (len(ids) - 1) // 64))
    width = (len(ids) - 1) // lanes
    rows = np.arange(lanes)[:, None] * width
    model.rnn.reset_state()
    total, count = 0.0, 0
    with no_grad():
        for start in range(0, width, seq_len):
            cols = np.arange(start, min(start + seq_len, width))[None, :]
            x, y = ids[rows + cols], ids[rows + cols + 1]
            total += F.cross_entropy(model(x), y, reduction="sum").item()
            count += y.size
    model.rnn.reset_state()
    return _exp(total / count)


def sample_stream(model, vocab, length=200, temperature=0.8, prime="", rng=None):
    """Yield the text of ``sample`` piece by piece: ``prime`` (or one random character), then each character."""
    if length < 0:
        raise ValueError(f"length must not be negative, got {length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    rng = nn.init.as_rng(rng)
    model.rnn.reset_state()
    prime = prime or vocab.chars[int(rng.integers(len(vocab)))]
    ids = vocab.encode(prime)
    try:
        with no_grad():
            logits = model(np.array([ids]))[:, -1]
            yield prime
            for _ in range(length):
                z = logits.data[0].astype(np.float64)
                # shift before dividing: a tiny temperature then gives 0 and -inf (greedy), never inf - inf
                with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                    p = np.exp((z - z.max()) / temperature)
                p = np.nan_to_num(p, nan=0.0)
                if not p.sum() > 0:
                    raise ValueError("sample: the model's logits are not finite numbers")
                nxt = int(rng.choice(len(p), p=p / p.sum()))
                yield vocab.chars[nxt]
                logits = model(np.array([[nxt]]))[:, -1]
    finally:
        model.rnn.reset_state()


def sample(model, vocab, length=200, temperature=0.8, prime="", rng=None):
    """Text generated one character at a time from the model's softmax (``prime`` is fed first)."""
    return "".join(sample_stream(model, vocab, length, temperature, prime, rng))


# ---------------------------------------------------------------------- files
def _write_atomic(path, write, mode="wb"):
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file of a unique name beside it,
    which then replaces ``path``; on any error, Ctrl-C included, the temporary file is removed."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Hold back Ctrl-C (SIGINT) until the block has finished, then raise KeyboardInterrupt.

    The checkpoint and the metrics are written inside one such block, so that Ctrl-C
    never leaves them disagreeing; writing them takes at most seconds.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)   # the default handler raises KeyboardInterrupt
        elif caught and previous != signal.SIG_IGN:
            raise KeyboardInterrupt


class _Lock:
    """A lock file that keeps a second run out of a folder while one trains there.

    Held with ``fcntl.flock`` where there is one, so a run that is killed leaves no
    lock behind; elsewhere the file is created exclusively and removed at the end.
    """

    def __init__(self, folder):
        self.path = os.path.join(folder, LOCK)
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is None:
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                raise self._refusal() from None
        else:
            while True:
                self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(self.fd)
                    raise self._refusal() from None
                try:   # the file locked must still be the one at the path (a run ending removes it)
                    if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(self.fd)
            os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def _refusal(self):
        try:
            with open(self.path) as f:
                who = f" (process {int(f.read().split()[0])})"
        except (OSError, ValueError, IndexError):
            who = ""
        return RunError(f"another run is training in {os.path.dirname(self.path)!r}{who}: its lock file "
                        f"{self.path!r} is held; wait for it, or choose another folder")

    def release(self):
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)
            os.close(self.fd)
            self.fd = None


def save_checkpoint(path, model, vocab, config, optimizer, progress):
    """Write everything needed to sample or to resume, atomically (a crash never leaves half a file)."""
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    meta = {"format": CHECKPOINT_FORMAT, "vocab": vocab.chars, "config": dataclasses.asdict(config), **progress}
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))
    _write_atomic(path, lambda f: np.savez(f, **arrays))


def _read_checkpoint(path):
    """``(vocab, config, meta, arrays)`` of a checkpoint, every field checked; nothing is built or imported."""
    arrays = read_npz(path)
    where = str(path)
    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("no format tag")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where!r} is not a tinygrad_rnn character-model checkpoint ({e})") from None
    chars, config = meta.get("vocab"), meta.get("config")
    if not (isinstance(chars, list) and all(isinstance(c, str) and len(c) == 1 for c in chars)
            and len(set(chars)) == len(chars) and len(chars) >= 2):
        raise CheckpointError(f"{where!r}: its vocabulary is not a list of distinct characters")
    if not isinstance(config, dict):
        raise CheckpointError(f"{where!r}: its configuration is not a JSON object")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:   # a field of another version of TrainConfig has no meaning here and is left out
        config = TrainConfig(**{k: v for k, v in config.items() if k in known}).check()
    except ValueError as e:
        raise CheckpointError(f"{where!r}: its configuration is not valid: {e}") from None
    for key in ("epoch", "step"):
        if not (isinstance(meta.get(key, 0), int) and meta.get(key, 0) >= 0):
            raise CheckpointError(f"{where!r}: its {key} count is not a whole number: {meta.get(key)!r}")
    history = meta.get("history", [])
    if not (isinstance(history, list) and all(isinstance(r, dict) for r in history)):
        raise CheckpointError(f"{where!r}: its history is not a list of records")
    return Vocab(chars), config, meta, arrays


def _cell_for(config, cell, where):
    """The cell spec to build: the checkpoint's if built in, else the one the user gives again (``cell``)."""
    if config.cell in nn.CELLS:
        if cell is not None and cell != config.cell:
            raise CheckpointError(f"{where!r} holds a model with a {config.cell!r} cell, not {cell!r}")
        return config.cell
    if cell is None:
        raise CheckpointError(
            f"{where!r} holds a model with a cell of your own, {config.cell!r}; loading a checkpoint never "
            f"imports the module it names: give the cell again (on the command line: --cell {config.cell})")
    if cell in nn.CELLS:
        raise CheckpointError(f"{where!r} holds a model with the cell {config.cell!r}, not the built-in {cell!r}")
    return cell


def load_checkpoint(path, cell=None):
    """``(model, vocab, config, meta, arrays)`` from a checkpoint; CheckpointError if it is not one.

    Loading runs no code from the file: the arrays are read without pickle and the
    configuration is JSON, checked field by field.  A checkpoint may name a built-in
    cell (``rnn``, ``lstm``, ``gru``); a model with a cell of the user's own needs
    ``cell`` (``"MODULE:CALLABLE"``), given again by the user.
    """
    vocab, config, meta, arrays = _read_checkpoint(path)
    config = dataclasses.replace(config, cell=_cell_for(config, cell, str(path)))
    return _model_of(path, vocab, config, arrays), vocab, config, meta, arrays


def _model_of(path, vocab, config, arrays):
    """The model that ``config`` describes, with the checkpoint's parameters."""
    try:
        model = CharLM(len(vocab), config)
    except ValueError as e:
        raise CheckpointError(f"{str(path)!r}: {e}") from None
    try:
        model.load_state_dict({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")})
    except nn.StateDictError as e:
        raise CheckpointError(f"{str(path)!r}: the parameters do not fit the model: {e}") from None
    return model


def _fingerprint(text, source):
    return {"characters": len(text), "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
            "source": source}


# ---------------------------------------------------------------------- the run
class _Run:
    """Everything one run holds between its set-up, its epochs and its end."""


def _resumed(resume, overrides, text):
    """The checkpoint's model, vocabulary, configuration and progress, with ``overrides`` checked against it."""
    vocab, config, meta, arrays = _read_checkpoint(resume)
    overrides = dict(overrides or {})
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"resume: unknown settings {sorted(unknown)}")
    clashes = []
    cell = overrides.pop("cell", None)
    if cell is not None and cell != config.cell and (config.cell in nn.CELLS or cell in nn.CELLS):
        clashes.append(f"--cell {cell} (the checkpoint's: {config.cell})")
    for key, value in overrides.items():
        if value != getattr(config, key) and key not in RESUMABLE:
            clashes.append(f"--{key.replace('_', '-')} {value} (the checkpoint's: {getattr(config, key)})")
    if clashes:
        raise RunError(f"resuming {str(resume)!r} with settings that contradict it: {', '.join(clashes)}; "
                       f"leave them out to continue the run as it was, or start a new run")
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if k in RESUMABLE})
    config = dataclasses.replace(config, cell=_cell_for(config, cell, str(resume))).check()
    missing = sorted(set(text) - set(vocab.chars))
    if missing:
        shown = repr("".join(missing[:40])) + (f" and {len(missing) - 40} more" if len(missing) > 40 else "")
        raise DataError(f"the text has characters that the checkpoint's vocabulary lacks: {shown}")
    before = meta.get("text")
    if isinstance(before, dict) and before.get("sha256") != _fingerprint(text, None)["sha256"]:
        raise RunError(f"resuming {str(resume)!r} on another text: the run was trained on "
                       f"{before.get('source') or 'a text'} ({before.get('characters')} characters); "
                       f"give that text (--text) to continue it")
    return _model_of(resume, vocab, config, arrays), vocab, config, meta, arrays


def _holds_run(folder):
    return [name for name in (CHECKPOINT, METRICS) if os.path.exists(os.path.join(folder, name))]


def _setup(text, config, out_dir, resume, overrides, overwrite, source, progress, log):
    run = _Run()
    meta, arrays = {}, {}
    if resume is not None:
        model, vocab, config, meta, arrays = _resumed(resume, overrides, text)
    else:
        config = (config or TrainConfig()).check()
        check_text(text)
        vocab = Vocab.from_text(text)
        try:
            model = CharLM(len(vocab), config)
        except MemoryError:
            raise ValueError(f"not enough memory for a model of hidden-size {config.hidden_size}; "
                             f"use a smaller one") from None
    ids = vocab.encode(text)
    train_ids, valid_ids = split(ids, config.valid_fraction)
    valid_ids = valid_ids[:config.max_valid_chars]
    if len(valid_ids) < 2:
        raise DataError(f"text of {len(text)} characters leaves no validation part; give more text")
    steps_per_epoch = (len(train_ids) - 1) // config.batch_size // config.seq_len
    if steps_per_epoch == 0:
        raise DataError(f"the training part ({len(train_ids)} characters) is too short for batch-size "
                        f"{config.batch_size} x seq-len {config.seq_len}; use smaller values")
    params = model.parameters()
    optimizer = _make_optimizer(params, config)
    if resume is not None:
        try:
            optimizer.load_state_dict({k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")})
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{str(resume)!r}: the optimiser state does not fit: {e}") from None

    run.traced = TracedStep(model) if config.trace else None
    run.program_path = None
    run.model, run.vocab, run.config, run.optimizer, run.params = model, vocab, config, optimizer, params
    run.train_ids, run.valid_ids, run.steps_per_epoch = train_ids, valid_ids, steps_per_epoch
    run.history = list(meta.get("history", []))
    run.epoch, run.step = int(meta.get("epoch", 0)), int(meta.get("step", 0))
    run.saved = (run.epoch, run.step) if resume is not None else None   # what the checkpoint on disk holds
    run.text_info = _fingerprint(text, source) if resume is None else meta.get("text", _fingerprint(text, source))
    run.baseline = unigram_perplexity(train_ids, valid_ids, len(vocab))
    run.rng = np.random.default_rng(config.seed + run.epoch)
    run.started = time.perf_counter() - (run.history[-1]["seconds"] if run.history else 0.0)
    # last, so that nothing after it can fail and leave the folder locked
    os.makedirs(out_dir, exist_ok=True)
    run.ckpt_path, run.metrics_path = os.path.join(out_dir, CHECKPOINT), os.path.join(out_dir, METRICS)
    run.lock, run.bar = _Lock(out_dir), None
    try:
        in_place = resume is not None and os.path.exists(run.ckpt_path) and os.path.samefile(resume, run.ckpt_path)
        held = _holds_run(out_dir)
        if held and not (overwrite or in_place):
            hint = f"--resume {run.ckpt_path}" if CHECKPOINT in held else "--resume"
            raise RunError(f"{str(out_dir)!r} already holds a run ({', '.join(held)}): continue it with {hint}, "
                           f"replace it with --overwrite, or choose another --out folder")
        for stale in glob.glob(os.path.join(glob.escape(str(out_dir)), ".*.tmp")):   # a killed run's
            if os.path.basename(stale).startswith((f".{CHECKPOINT}.", f".{METRICS}.", f".{PROGRAM}.")):
                os.remove(stale)
        run.written = in_place   # whether out_dir's model.npz and metrics.jsonl are this run's
        run.bar = _progress_bar(progress, config.epochs * steps_per_epoch, run.step)
        run.log = run.bar.write if run.bar is not None and log is print else log   # lines above the bar
        run.log(f"text: {len(text)} characters, vocabulary {len(vocab)}; training on {len(train_ids)}, "
                f"validating on {len(valid_ids)}; unigram baseline perplexity {run.baseline:.2f}")
        run.log(f"model: {config.cell} cell, hidden {config.hidden_size}, {sum(p.size for p in params)} parameters")
    except BaseException:
        if run.bar is not None:
            run.bar.close()
        run.lock.release()
        raise
    return run


def _diverged(run, what, value, at_step=True):
    kept = (f"the checkpoint of epoch {run.saved[0]} is kept ({run.ckpt_path if run.written else 'the resumed one'})"
            if run.saved and run.saved[0] else "no checkpoint was written")
    when = f"at epoch {run.epoch + 1}, step {run.step + 1}" if at_step else f"at the end of epoch {run.epoch + 1}"
    return Diverged(f"{what} became {value} {when}; {kept}")


def _grad_norm(params):
    return math.sqrt(sum(float(np.sum(np.square(p.grad, dtype=np.float64))) for p in params if p.grad is not None))


def _one_epoch(run):
    """One pass over the training text, then validation, and the checkpoint with the metrics."""
    model, config, params, optimizer = run.model, run.config, run.params, run.optimizer
    model.rnn.reset_state()
    if run.traced is not None:
        run.traced.reset()
    total = count = 0.0
    for x, y in bptt_batches(run.train_ids, config.batch_size, config.seq_len):
        optimizer.zero_grad()
        if run.traced is not None:
            loss = run.traced(x, y)
        else:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            loss = loss.item()
        if not math.isfinite(loss):   # checked before the update: the parameters stay as they were
            raise _diverged(run, "the loss", loss)
        norm = optim.clip_grad_norm(params, config.clip) if config.clip else _grad_norm(params)
        if not math.isfinite(norm):
            raise _diverged(run, "the gradient norm", norm)
        optimizer.step()
        run.step += 1
        total, count = total + loss, count + 1
        if run.bar is not None:
            run.bar.update(1)
            run.bar.set_postfix(loss=f"{loss:.3f}", epoch=run.epoch + 1)
        if config.max_steps and run.step >= config.max_steps:
            break
    bad = [name for name, p in model.named_parameters() if not np.isfinite(p.data).all()]
    if bad:
        raise _diverged(run, f"the parameter {bad[0]}", "non-finite", at_step=False)
    valid = evaluate(model, run.valid_ids)
    if not math.isfinite(valid):   # a mean loss above 709 nats overflows: a diverged run, too
        raise _diverged(run, "the validation perplexity", valid, at_step=False)
    if not math.isfinite(_exp(total / max(count, 1))):
        raise _diverged(run, "the training perplexity", "inf", at_step=False)
    record = {"epoch": run.epoch + 1, "step": run.step, "train_loss": total / max(count, 1),
              "train_perplexity": _exp(total / max(count, 1)), "valid_perplexity": valid,
              "seconds": round(time.perf_counter() - run.started, 3)}
    history = run.history + [record]
    lines = "".join(json.dumps(r) + "\n" for r in history)
    with _ctrl_c_deferred():   # the two files always agree: both written, or neither
        save_checkpoint(run.ckpt_path, model, run.vocab, run.config, optimizer,
                        {"epoch": run.epoch + 1, "step": run.step, "history": history, "text": run.text_info})
        _write_atomic(run.metrics_path, lambda f: f.write(lines), "w")
        if run.traced is not None and run.program_path is None:   # the program is written once, at the first step
            run.program_path = os.path.join(os.path.dirname(run.ckpt_path), PROGRAM)
            _write_atomic(run.program_path, lambda f: f.write(run.traced.program_source()), "w")
        run.epoch, run.history, run.saved, run.written = run.epoch + 1, history, (run.epoch + 1, run.step), True
    text_sample = sample(model, run.vocab, min(config.sample_length, 80), config.temperature, rng=run.rng)
    run.log(f"epoch {run.epoch}: train perplexity {record['train_perplexity']:.2f}, "
            f"valid perplexity {record['valid_perplexity']:.2f} | {text_sample!r}")


def train(text, config=None, out_dir="runs/charlm", resume=None, progress=True, log=print, overrides=None,
          overwrite=False, source=None):
    """Train a character model on ``text``; returns a dict of results and file paths.

    Each epoch: one pass of truncated BPTT over the training part (the RNN's
    state carried across batches, detached), then validation perplexity, a
    sample, and ``model.npz`` with ``metrics.jsonl`` written together (each one
    whole: a temporary file, then a rename; Ctrl-C waits for both).  The loss and
    the gradient norm are checked at every step: NaN or infinity raises
    ``Diverged`` before anything is written.  Ctrl-C stops cleanly: the last
    checkpoint written stays valid, and the result says which it is.

    A new run refuses (``RunError``) a folder that holds a run unless
    ``overwrite``; a lock file keeps two runs out of one folder.  With ``resume``
    (a checkpoint path) the run continues from where it stopped; ``overrides``
    may change the settings named in ``RESUMABLE`` (for example ``{"epochs": 40}``
    to train further), and any other setting that differs from the checkpoint's
    is refused.  ``source`` names the text (a file name) in the checkpoint.
    """
    run = _setup(text, config, out_dir, resume, overrides, overwrite, source, progress, log)
    config, interrupted = run.config, False
    try:
        # non-finite numbers are checked for at every step, and reported as one line: numpy need not warn
        mode = composites.expanded() if config.expanded else contextlib.nullcontext()
        with mode, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            while run.epoch < config.epochs and not (config.max_steps and run.step >= config.max_steps):
                try:
                    _one_epoch(run)
                except (Diverged, KeyboardInterrupt):
                    raise
                except Exception as e:
                    if config.cell in nn.CELLS:
                        raise
                    # the user's cell failed in a way the probe at its creation did not show
                    raise ValueError(f"cell {config.cell!r} failed at epoch {run.epoch + 1}, step {run.step + 1}: "
                                     f"{type(e).__name__}: {e}") from e
    except KeyboardInterrupt:
        interrupted = True
        with _ctrl_c_deferred():   # a second Ctrl-C waits until the message and the lock are settled
            if run.saved is None or not run.saved[0]:
                run.log(f"interrupted at step {run.step}, before the first checkpoint: nothing of this run was "
                        f"written")
            else:
                where = run.ckpt_path if run.written else str(resume)
                run.log(f"interrupted at step {run.step}: the checkpoint of epoch {run.saved[0]} "
                        f"(step {run.saved[1]}) is kept in {where}")
    finally:
        with _ctrl_c_deferred():
            if run.bar is not None:
                run.bar.close()
            run.lock.release()
    return _finish(run, interrupted)


def _finish(run, interrupted):
    """The result: what the run did, and the files of it that are on disk."""
    config, history = run.config, run.history
    result = {"epochs": run.epoch, "steps": run.step, "unigram_perplexity": run.baseline,
              "valid_perplexity": history[-1]["valid_perplexity"] if history else float("nan"),
              "saved_epoch": run.saved[0] if run.saved else 0, "saved_step": run.saved[1] if run.saved else 0,
              "checkpoint": run.ckpt_path if run.written else None,
              "metrics": run.metrics_path if run.written else None, "program": run.program_path,
              "interrupted": interrupted, "history": history}
    if not interrupted and history:
        result["sample"] = sample(run.model, run.vocab, config.sample_length, config.temperature, rng=run.rng)
        run.log(f"sample:\n{result['sample']}")
    return result


def _progress_bar(enabled, total, initial):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:   # the progress extra is optional
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)
