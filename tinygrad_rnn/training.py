"""Training a character language model with truncated BPTT: the model, the loop, checkpoints, sampling.

The model is Embedding -> RNN(cell, stateful) -> Linear, as Deep Learning from
Scratch 2's SimpleRnnlm.  A checkpoint is one ``.npz`` holding the parameters,
the optimiser's state and a JSON string (vocabulary, configuration, progress),
so that loading it never runs code.
"""
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np

from . import functional as F
from . import composites, nn, optim
from .data import DataError, Vocab, bptt_batches, check_text, split, unigram_perplexity
from .nn.module import read_npz
from .tensor import no_grad
from .tracing import trace

__all__ = ["TrainConfig", "CharLM", "TracedStep", "make_cell", "train", "evaluate", "sample",
           "save_checkpoint", "load_checkpoint", "CheckpointError"]

CHECKPOINT_FORMAT = "tinygrad_rnn.charlm/1"


class CheckpointError(ValueError):
    """A checkpoint file that is not one of ours, or does not fit."""


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

    def check(self):
        """Raise ValueError for a field out of range; returns the config."""
        positive = ("hidden_size", "embed_size", "seq_len", "batch_size", "epochs", "sample_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
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
    ``nn.GRUCell`` fits this directly.
    """
    builtin = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
    if spec in builtin:
        return builtin[spec](input_size, hidden_size, rng=rng, dtype=dtype)
    if ":" not in spec:
        raise ValueError(f"unknown cell {spec!r}: use rnn, lstm, gru or MODULE:CALLABLE")
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
    return cell


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


class CharLM(nn.Module):
    """Embedding -> stateful RNN over the cell -> Linear to one logit per character."""

    def __init__(self, vocab_size, config, rng=None):
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


def _make_optimizer(params, config):
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.lr)
    return optim.SGD(params, lr=config.lr, momentum=config.momentum)


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
    return math.exp(total / count)


def sample(model, vocab, length=200, temperature=0.8, prime="", rng=None):
    """Text generated one character at a time from the model's softmax (``prime`` is fed first)."""
    if length < 0:
        raise ValueError(f"length must not be negative, got {length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    rng = nn.init.as_rng(rng)
    model.rnn.reset_state()
    prime = prime or vocab.chars[int(rng.integers(len(vocab)))]
    ids = list(vocab.encode(prime))
    with no_grad():
        logits = model(np.array([ids]))[:, -1]
        for _ in range(length):
            z = logits.data[0].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            ids.append(nxt)
            logits = model(np.array([[nxt]]))[:, -1]
    model.rnn.reset_state()
    return vocab.decode(ids)


def save_checkpoint(path, model, vocab, config, optimizer, progress):
    """Write everything needed to sample or to resume, atomically (a crash never leaves half a file)."""
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    meta = {"format": CHECKPOINT_FORMAT, "vocab": vocab.chars, "config": dataclasses.asdict(config), **progress}
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path):
    """``(model, vocab, config, meta, arrays)`` from a checkpoint; CheckpointError if it is not one."""
    arrays = read_npz(path)
    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise KeyError("format")
        vocab = Vocab(meta["vocab"])
        config = TrainConfig(**{k: v for k, v in meta["config"].items() if k != "fused"})   # an older field
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is not a tinygrad_rnn character-model checkpoint ({e})") from None
    model = CharLM(len(vocab), config)
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    try:
        model.load_state_dict(params)
    except nn.StateDictError as e:
        raise CheckpointError(f"{str(path)!r}: the parameters do not fit the model: {e}") from None
    return model, vocab, config, meta, arrays


def train(text, config=None, out_dir="runs/charlm", resume=None, progress=True, log=print, plot=True,
          overrides=None):
    """Train a character model on ``text``; returns a dict of results and file paths.

    Each epoch: one pass of truncated BPTT over the training part (the RNN's
    state carried across batches, detached), then validation perplexity, a
    sample, a checkpoint (``model.npz``) and a line in ``metrics.jsonl``.
    Ctrl-C stops cleanly: the last checkpoint written stays valid.  With
    ``resume`` (a checkpoint path) the run continues from where it stopped,
    with the checkpoint's configuration updated by ``overrides`` (for example
    ``{"epochs": 40}`` to train further).
    """
    meta, arrays = {}, {}
    if resume is not None:
        model, vocab, config, meta, arrays = load_checkpoint(resume)
        config = dataclasses.replace(config, **(overrides or {})).check()
        if set(text) - set(vocab.chars):
            raise DataError("the text has characters that the checkpoint's vocabulary lacks")
    else:
        config = (config or TrainConfig()).check()
        check_text(text)
        vocab = Vocab.from_text(text)
        model = CharLM(len(vocab), config)
    ids = vocab.encode(text)
    train_ids, valid_ids = split(ids, config.valid_fraction)
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

    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "model.npz")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    history = list(meta.get("history", []))
    # the metrics file always restates the run so far (from the checkpoint when resuming), so a resumed
    # run in a new folder has its whole history, and a line written after the last checkpoint is dropped
    with open(metrics_path, "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in history)
    baseline = unigram_perplexity(train_ids, valid_ids, len(vocab))
    log(f"text: {len(text)} characters, vocabulary {len(vocab)}; unigram baseline perplexity {baseline:.2f}")
    log(f"model: {config.cell} cell, hidden {config.hidden_size}, {sum(p.size for p in params)} parameters")
    epoch, step = int(meta.get("epoch", 0)), int(meta.get("step", 0))
    rng = np.random.default_rng(config.seed + epoch)
    bar = _progress_bar(progress, config.epochs * steps_per_epoch, step)
    if bar is not None and log is print:
        log = bar.write   # prints above the bar instead of through it
    interrupted = False
    started = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
    try:
        traced = TracedStep(model) if config.trace else None
        with composites.expanded() if config.expanded else contextlib.nullcontext():
            while epoch < config.epochs and not (config.max_steps and step >= config.max_steps):
                model.rnn.reset_state()
                if traced is not None:
                    traced.reset()
                total = count = 0.0
                for x, y in bptt_batches(train_ids, config.batch_size, config.seq_len):
                    optimizer.zero_grad()
                    if traced is not None:
                        loss = traced(x, y)
                    else:
                        loss = F.cross_entropy(model(x), y)
                        loss.backward()
                        loss = loss.item()
                    if config.clip:
                        optim.clip_grad_norm(params, config.clip)
                    optimizer.step()
                    step += 1
                    total, count = total + loss, count + 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.3f}", epoch=epoch + 1)
                    if config.max_steps and step >= config.max_steps:
                        break
                epoch += 1
                record = {"epoch": epoch, "step": step, "train_loss": total / max(count, 1),
                          "train_perplexity": math.exp(total / max(count, 1)),
                          "valid_perplexity": evaluate(model, valid_ids),
                          "seconds": round(time.perf_counter() - started, 3)}
                history.append(record)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                save_checkpoint(ckpt_path, model, vocab, config, optimizer,
                                {"epoch": epoch, "step": step, "history": history})
                text_sample = sample(model, vocab, min(config.sample_length, 80), config.temperature, rng=rng)
                log(f"epoch {epoch}: train perplexity {record['train_perplexity']:.2f}, "
                    f"valid perplexity {record['valid_perplexity']:.2f} | {text_sample!r}")
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping; the last checkpoint written is kept")
    finally:
        if bar is not None:
            bar.close()
    result = {"epochs": epoch, "steps": step, "unigram_perplexity": baseline,
              "valid_perplexity": history[-1]["valid_perplexity"] if history else float("nan"),
              "checkpoint": ckpt_path if os.path.exists(ckpt_path) else None,
              "metrics": metrics_path, "interrupted": interrupted, "history": history, "plot": None}
    if not interrupted and history:
        result["sample"] = sample(model, vocab, config.sample_length, config.temperature, rng=rng)
        log(f"sample:\n{result['sample']}")
    if plot and history:
        from .viz import plot_training
        result["plot"] = plot_training(history, os.path.join(out_dir, "training.png"), baseline)
    return result


def _progress_bar(enabled, total, initial):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:   # the progress extra is optional
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)
