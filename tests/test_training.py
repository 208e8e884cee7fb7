"""The character model's training loop: learning, checkpoints without pickle, resuming, Ctrl-C, sampling."""
import json
import math
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from tinygrad_rnn import functional as F
from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import DataError, default_corpus
from tinygrad_rnn.training import Diverged, RunError, _Lock
from tinygrad_rnn.training import (CharLM, CheckpointError, TrainConfig, evaluate, load_checkpoint, make_cell,
                                   sample, train)

TEXT = default_corpus()[:4000]


def small(**kw):
    base = dict(cell="rnn", hidden_size=32, embed_size=16, seq_len=16, batch_size=8, lr=0.01, epochs=2,
                sample_length=30)
    base.update(kw)
    return TrainConfig(**base)


def run(tmp_path, config, name="run", **kw):
    lines = []
    result = train(TEXT, config, out_dir=tmp_path / name, progress=False, log=lines.append, **kw)
    return result, "\n".join(lines)


def test_learns_writes_checkpoint_and_metrics(tmp_path):
    result, text = run(tmp_path, small(epochs=3))
    assert result["epochs"] == 3 and not result["interrupted"]
    assert result["valid_perplexity"] < 0.75 * result["unigram_perplexity"]
    assert "unigram baseline perplexity" in text and "epoch 3:" in text
    records = [json.loads(line) for line in Path(result["metrics"]).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["valid_perplexity"] == pytest.approx(result["valid_perplexity"])
    assert records[-1]["step"] == result["steps"] == 3 * ((3601 - 1) // 8 // 16)
    assert len(result["sample"]) == 30 + 1                  # one priming character + 30 generated
    model, vocab, config, meta, _ = load_checkpoint(result["checkpoint"])
    assert vocab.chars == sorted(set(TEXT)) and config == small(epochs=3)
    assert meta["epoch"] == 3 and meta["step"] == result["steps"]
    # the checkpoint's weights give the same validation perplexity as the run reported
    ids = vocab.encode(TEXT)
    valid = ids[len(ids) - int(len(ids) * config.valid_fraction):]
    assert evaluate(model, valid) == pytest.approx(result["valid_perplexity"], rel=1e-6)


def test_checkpoint_needs_no_pickle(tmp_path):
    result, _ = run(tmp_path, small(epochs=1))
    with np.load(result["checkpoint"], allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"][()]))
        assert all(archive[k].dtype != object for k in archive.files)
    assert meta["format"] == "tinygrad_rnn.charlm/1" and meta["config"]["cell"] == "rnn"


def test_resume_continues_the_run_exactly(tmp_path):
    straight, _ = run(tmp_path, small(cell="lstm", epochs=4), "straight")
    first, _ = run(tmp_path, small(cell="lstm", epochs=2), "resumed")
    again, text = run(tmp_path, None, "resumed", resume=first["checkpoint"], overrides={"epochs": 4})
    assert again["epochs"] == 4 and again["steps"] == straight["steps"]
    assert [r["epoch"] for r in again["history"]] == [1, 2, 3, 4]
    assert len(Path(again["metrics"]).read_text().splitlines()) == 4
    a, b = load_checkpoint(straight["checkpoint"])[0], load_checkpoint(again["checkpoint"])[0]
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)   # Adam's moments and step count restored
    assert again["valid_perplexity"] == straight["valid_perplexity"]
    # resuming into another folder carries the whole history into its metrics file
    elsewhere, _ = run(tmp_path, None, "elsewhere", resume=again["checkpoint"], overrides={"epochs": 5})
    lines = Path(elsewhere["metrics"]).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def test_ctrl_c_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    steps_per_epoch = (3601 - 1) // 8 // 16
    calls = {"n": 0}
    real = optim.clip_grad_norm

    def interrupting(params, max_norm):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 3:               # in the middle of the second epoch
            raise KeyboardInterrupt
        return real(params, max_norm)

    monkeypatch.setattr(optim, "clip_grad_norm", interrupting)
    result, text = run(tmp_path, small(epochs=3))
    assert result["interrupted"] and "interrupted" in text
    assert result["epochs"] == 1 and result["steps"] == steps_per_epoch + 2
    model, _, _, meta, _ = load_checkpoint(result["checkpoint"])
    assert meta["epoch"] == 1 and meta["step"] == steps_per_epoch
    monkeypatch.setattr(optim, "clip_grad_norm", real)
    resumed, _ = run(tmp_path, None, resume=result["checkpoint"])
    assert resumed["epochs"] == 3 and resumed["steps"] == 3 * steps_per_epoch


def test_sampling(tmp_path):
    result, _ = run(tmp_path, small(epochs=1))
    model, vocab, *_ = load_checkpoint(result["checkpoint"])
    one = sample(model, vocab, length=50, temperature=0.5, prime="The ", rng=7)
    assert one.startswith("The ") and len(one) == 54 and set(one) <= set(vocab.chars)
    assert sample(model, vocab, length=50, temperature=0.5, prime="The ", rng=7) == one
    assert sample(model, vocab, length=0, prime="ab", rng=1) == "ab"
    # a very low temperature is nearly greedy: the same text whatever the seed
    assert sample(model, vocab, 40, 1e-4, "the", rng=1) == sample(model, vocab, 40, 1e-4, "the", rng=2)
    with pytest.raises(ValueError, match="temperature"):
        sample(model, vocab, temperature=0)
    with pytest.raises(DataError, match="not in the vocabulary"):
        sample(model, vocab, prime="\u00e9")


def test_bad_checkpoints(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.npz")
    nn.Linear(2, 3).save(tmp_path / "plain.npz")              # an npz, but not a character model
    with pytest.raises(CheckpointError, match="not a tinygrad_rnn character-model checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


def test_resume_rejects_new_characters(tmp_path):
    result, _ = run(tmp_path, small(epochs=1))
    with pytest.raises(DataError, match="vocabulary"):
        train(TEXT + "\u00e9", out_dir=tmp_path / "x", resume=result["checkpoint"], progress=False,
              log=lambda s: None)


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 0, "hidden-size"), ("lr", 0.0, "lr"), ("optimizer", "rmsprop", "optimizer"),
    ("dtype", "float16", "dtype"), ("valid_fraction", 1.0, "valid-fraction"), ("temperature", 0, "temperature")])
def test_config_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).check()


def test_text_too_short(tmp_path):
    with pytest.raises(DataError, match="too short"):
        train("abcdefghij" * 3, small(batch_size=8, seq_len=16), out_dir=tmp_path, progress=False,
              log=lambda s: None)
    with pytest.raises(DataError, match="2 distinct"):
        train("aaaa", small(), out_dir=tmp_path, progress=False, log=lambda s: None)


def test_sgd_and_float64(tmp_path):
    result, _ = run(tmp_path, small(cell="gru", optimizer="sgd", lr=0.5, momentum=0.9, dtype="float64", epochs=2))
    model, *_ = load_checkpoint(result["checkpoint"])
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert result["valid_perplexity"] < result["unigram_perplexity"]


def write_cell_module(tmp_path, body):
    (tmp_path / "leaky_cells_for_tests.py").write_text(body)
    return "leaky_cells_for_tests"


def test_user_cell(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_cell_module(tmp_path, (
        "import tinygrad_rnn.functional as F\n"
        "from tinygrad_rnn import nn\n"
        "class Leaky(nn.Module):\n"
        "    def __init__(self, input_size, hidden_size, rng=None, dtype=None):\n"
        "        self.inner = nn.RNNCell(input_size, hidden_size, rng=rng, dtype=dtype)\n"
        "        self.input_size, self.hidden_size = input_size, hidden_size\n"
        "    def initial_state(self, batch):\n"
        "        return self.inner.initial_state(batch)\n"
        "    def forward(self, x, h=None):\n"
        "        h = self.initial_state(x.shape[0]) if h is None else h\n"
        "        return 0.5 * h + 0.5 * self.inner(x, h)\n"
        "def not_a_cell(input_size, hidden_size, rng=None, dtype=None):\n"
        "    return 42\n"))
    cell = make_cell("leaky_cells_for_tests:Leaky", 3, 4, np.random.default_rng(0), np.float64)
    assert sorted(dict(cell.named_parameters())) == ["inner.Wh", "inner.Wx", "inner.b"]
    result, _ = run(tmp_path, small(cell="leaky_cells_for_tests:Leaky", epochs=2))
    assert result["valid_perplexity"] < result["unigram_perplexity"]
    # loading never imports what a checkpoint names: the user gives the cell again
    with pytest.raises(CheckpointError, match="give the cell again"):
        load_checkpoint(result["checkpoint"])
    model = load_checkpoint(result["checkpoint"], cell="leaky_cells_for_tests:Leaky")[0]
    assert type(model.rnn.cell).__name__ == "Leaky"
    with pytest.raises(ValueError, match="must return an nn.Module"):
        make_cell("leaky_cells_for_tests:not_a_cell", 3, 4, None, np.float64)
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        make_cell("leaky_cells_for_tests:Nope", 3, 4, None, np.float64)
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        make_cell("no_such_module_xyz:Cell", 3, 4, None, np.float64)
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        make_cell("transformer", 3, 4, None, np.float64)


def test_charlm_shapes():
    model = CharLM(7, small(cell="lstm"))
    logits = model(np.zeros((3, 5), dtype=np.int64))
    assert logits.shape == (3, 5, 7) and logits.dtype == np.float32
    assert math.isfinite(float(logits.data.sum()))


def test_progress_bar(tmp_path, capsys):
    pytest.importorskip("tqdm")
    result = train(TEXT, small(epochs=2), out_dir=tmp_path, progress=True)
    out, err = capsys.readouterr()
    assert "epoch 1:" in out and "epoch 2:" in out      # epoch lines on stdout, above the bar
    assert "step" in err and "loss=" in err              # the bar, with the live loss, on stderr
    assert "plot" not in result and not (tmp_path / "training.png").exists()   # the command line plots


def test_user_cell_from_a_file_or_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "filecells.py").write_text(
        "from tinygrad_rnn import nn\n"
        "def tiny(input_size, hidden_size, rng=None, dtype=None):\n"
        "    return nn.RNNCell(input_size, hidden_size, nonlinearity='relu', rng=rng, dtype=dtype)\n")
    (tmp_path / "raising.py").write_text("raise RuntimeError('broken at import')\n")
    cell = make_cell(str(tmp_path / "sub" / "filecells.py") + ":tiny", 3, 4, None, np.float64)
    assert isinstance(cell, nn.RNNCell) and cell.Wh.shape == (4, 4)
    monkeypatch.chdir(tmp_path / "sub")
    import sys
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path / "sub"))])
    assert isinstance(make_cell("filecells:tiny", 2, 3, None, np.float64), nn.RNNCell)
    with pytest.raises(ValueError, match="RuntimeError: broken at import"):
        make_cell(str(tmp_path / "raising.py") + ":x", 2, 3, None, np.float64)
    with pytest.raises(ValueError, match="no file"):
        make_cell("nowhere/cells.py:x", 2, 3, None, np.float64)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("expanded", [False, True], ids=["compiled", "expanded"])
def test_traced_training_gives_the_eager_parameters(tmp_path, cell, expanded):
    # the traced step replays the engine's own numpy calls in its order: equal to the last bit
    eager, _ = run(tmp_path, small(cell=cell, epochs=2, expanded=expanded), "eager")
    traced, _ = run(tmp_path, small(cell=cell, epochs=2, expanded=expanded, trace=True), "traced")
    a, b = load_checkpoint(eager["checkpoint"])[0], load_checkpoint(traced["checkpoint"])[0]
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert [r["train_loss"] for r in traced["history"]] == [r["train_loss"] for r in eager["history"]]


def test_traced_step_carries_the_state_and_refuses_a_cell_without_a_zero_state():
    from tinygrad_rnn import functional as F
    from tinygrad_rnn.training import TracedStep
    model = CharLM(5, small(cell="lstm"))
    twin = CharLM(5, small(cell="lstm"))
    rng = np.random.default_rng(0)
    step = TracedStep(model)
    for _ in range(3):   # the second and third chunks start from the state the chunk before left
        x, y = rng.integers(0, 5, (4, 6)), rng.integers(0, 5, (4, 6))
        model.zero_grad(), twin.zero_grad()
        loss = step(x, y)
        expected = F.cross_entropy(twin(x), y)
        expected.backward()
        assert loss == expected.item()
        for p, q in zip(model.parameters(), twin.parameters()):
            np.testing.assert_array_equal(p.grad, q.grad)
    assert step.program.retraces == 0        # nothing it reads changes between steps: one program

    # the model is reached through the step object: a replaced head is seen
    model.out, twin.out = nn.Linear(model.out.W.shape[0], 5, rng=3), nn.Linear(model.out.W.shape[0], 5, rng=3)
    step.reset()
    x, y = rng.integers(0, 5, (4, 6)), rng.integers(0, 5, (4, 6))
    model.zero_grad(), twin.zero_grad()
    twin.rnn.reset_state()
    loss = step(x, y)
    expected = F.cross_entropy(twin(x), y)
    expected.backward()
    assert loss == expected.item() and step.program.retraces == 1
    np.testing.assert_array_equal(model.out.W.grad, twin.out.W.grad)

    class NoZeroState(nn.Module):
        def forward(self, x, state):
            return x
    model.rnn.cell = NoZeroState()
    with pytest.raises(ValueError, match="initial_state"):
        TracedStep(model)


# ---------------------------------------------------------------------- what a run writes, and when

STEPS_PER_EPOCH = (3601 - 1) // 8 // 16


def files(folder):
    return sorted(os.listdir(folder))


def consistent(folder):
    """The checkpoint loads and metrics.jsonl restates its history, line for line; nothing else is left."""
    _, _, _, meta, _ = load_checkpoint(folder / "model.npz")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert records == meta["history"] and [r["epoch"] for r in records] == list(range(1, meta["epoch"] + 1))
    assert not [n for n in files(folder) if n.endswith(".tmp") or n == "train.lock"], files(folder)
    return meta


def test_a_nan_loss_stops_the_run_before_anything_is_written(tmp_path, monkeypatch):
    real, calls = F.cross_entropy, {"n": 0}

    def turning_nan(logits, target, reduction="mean"):
        loss = real(logits, target, reduction=reduction)
        if reduction == "mean":                        # the training steps, not validation
            calls["n"] += 1
            if calls["n"] >= STEPS_PER_EPOCH + 5:      # in the second epoch
                return loss * float("nan")
        return loss

    monkeypatch.setattr(F, "cross_entropy", turning_nan)
    with pytest.raises(Diverged) as caught:
        run(tmp_path, small(epochs=3))
    assert str(caught.value).startswith(f"the loss became nan at epoch 2, step {STEPS_PER_EPOCH + 5}; "
                                        f"the checkpoint of epoch 1 is kept")
    meta = consistent(tmp_path / "run")
    model = load_checkpoint(tmp_path / "run" / "model.npz")[0]
    assert meta["epoch"] == 1 and all(np.isfinite(p.data).all() for p in model.parameters())


def test_a_diverging_run_stops_with_one_message_and_writes_nothing(tmp_path):
    with pytest.raises(Diverged, match="became (nan|inf|-inf|non-finite).*no checkpoint was written"):
        run(tmp_path, small(optimizer="sgd", lr=1e30, clip=0.0, epochs=2))
    assert files(tmp_path / "run") == []


def test_a_new_run_never_replaces_an_older_one(tmp_path, monkeypatch):
    first, _ = run(tmp_path, small(epochs=1))
    folder = tmp_path / "run"
    before = {n: (folder / n).read_bytes() for n in ("model.npz", "metrics.jsonl")}
    with pytest.raises(RunError, match=r"already holds a run \(model.npz, metrics.jsonl\).*--resume .*--overwrite"):
        run(tmp_path, small(epochs=1, seed=1))
    assert {n: (folder / n).read_bytes() for n in before} == before
    # --overwrite replaces the old run only when the new one has a checkpoint: cut before that, both stay
    real, calls = optim.clip_grad_norm, {"n": 0}

    def interrupting(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(params, max_norm)

    monkeypatch.setattr(optim, "clip_grad_norm", interrupting)
    cut, text = run(tmp_path, small(epochs=1, seed=1), overwrite=True)
    assert cut["interrupted"] and cut["checkpoint"] is None and cut["metrics"] is None
    assert "nothing of this run was written" in text
    assert {n: (folder / n).read_bytes() for n in before} == before
    monkeypatch.setattr(optim, "clip_grad_norm", real)
    again, _ = run(tmp_path, small(epochs=1, seed=1), overwrite=True)
    assert again["checkpoint"] and load_checkpoint(again["checkpoint"])[2].seed == 1
    consistent(folder)


def test_ctrl_c_during_the_checkpoint_write_finishes_both_files(tmp_path, monkeypatch):
    real, calls = np.savez, {"n": 0}

    def ctrl_c_while_writing(file, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)        # a real Ctrl-C, in the middle of the second write
        return real(file, **arrays)

    monkeypatch.setattr(np, "savez", ctrl_c_while_writing)
    result, text = run(tmp_path, small(epochs=4))
    assert result["interrupted"] and result["epochs"] == result["saved_epoch"] == 2
    assert result["checkpoint"] and consistent(tmp_path / "run")["epoch"] == 2
    assert "the checkpoint of epoch 2" in text


def test_a_write_that_fails_leaves_the_last_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    real, calls = np.savez, {"n": 0}

    def failing(file, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            file.write(b"half a file")
            raise KeyboardInterrupt                   # raised by the write itself, not a signal: not held back
        return real(file, **arrays)

    monkeypatch.setattr(np, "savez", failing)
    result, text = run(tmp_path, small(epochs=4))
    assert result["interrupted"] and result["saved_epoch"] == 1 and "the checkpoint of epoch 1" in text
    assert consistent(tmp_path / "run")["epoch"] == 1


def test_a_second_run_in_the_folder_is_refused_by_the_lock(tmp_path):
    (tmp_path / "run").mkdir()
    lock = _Lock(str(tmp_path / "run"))
    try:
        with pytest.raises(RunError, match=rf"another run is training .*process {os.getpid()}.*train.lock"):
            run(tmp_path, small(epochs=1))
        with pytest.raises(RunError, match="train.lock"):
            run(tmp_path, small(epochs=1), overwrite=True)
    finally:
        lock.release()
    result, _ = run(tmp_path, small(epochs=1))
    consistent(tmp_path / "run")


def test_resume_refuses_settings_that_contradict_the_checkpoint(tmp_path):
    first, _ = run(tmp_path, small(epochs=1))
    clash = dict(cell="gru", hidden_size=64, lr=0.1, optimizer="sgd")
    with pytest.raises(RunError) as caught:
        run(tmp_path, None, resume=first["checkpoint"], overrides=clash)
    message = str(caught.value)
    for part in ("--cell gru (the checkpoint's: rnn)", "--hidden-size 64 (the checkpoint's: 32)",
                 "--lr 0.1 (the checkpoint's: 0.01)", "--optimizer sgd (the checkpoint's: adam)"):
        assert part in message
    # the same values, and the settings a resumed run may change, are accepted
    again, _ = run(tmp_path, None, resume=first["checkpoint"],
                   overrides=dict(cell="rnn", hidden_size=32, lr=0.01, epochs=2, temperature=0.5))
    assert again["epochs"] == 2 and load_checkpoint(again["checkpoint"])[2].temperature == 0.5
    with pytest.raises(RunError, match="on another text: the run was trained on a text \\(4000 characters\\)"):
        train(TEXT[:3990] + TEXT[:10], out_dir=tmp_path / "run", resume=again["checkpoint"], progress=False,
              log=lambda s: None, overrides={"epochs": 3})
    message = r"the text has characters that the checkpoint's vocabulary lacks: '\u00e9\u03c0'"
    with pytest.raises(DataError, match=message):
        train(TEXT + "\u00e9\u03c0", out_dir=tmp_path / "run", resume=again["checkpoint"], progress=False,
              log=lambda s: None)


def rewrite_meta(src, dst, change):
    with np.load(src, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays["meta"][()]))
    change(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)


def test_loading_never_imports_what_a_checkpoint_names(tmp_path, capsys):
    import sys
    first, _ = run(tmp_path, small(epochs=1))
    rewrite_meta(first["checkpoint"], tmp_path / "zen.npz", lambda m: m["config"].update(cell="this:x"))
    sys.modules.pop("this", None)
    with pytest.raises(CheckpointError, match="never imports the module it names: give the cell again"):
        load_checkpoint(tmp_path / "zen.npz")
    assert "this" not in sys.modules and capsys.readouterr().out == ""
    with pytest.raises(CheckpointError, match="not the built-in 'gru'"):
        load_checkpoint(tmp_path / "zen.npz", cell="gru")


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", "32", "hidden-size must be int, got '32'"), ("lr", None, "lr must be float"),
    ("trace", 1, "trace must be bool"), ("epochs", 2.5, "epochs must be int"), ("cell", ["rnn"], "cell must be str"),
    ("hidden_size", -3, "hidden-size must be at least 1")])
def test_a_checkpoint_config_of_the_wrong_types_is_refused(tmp_path, field, value, message):
    first, _ = run(tmp_path, small(epochs=1))
    rewrite_meta(first["checkpoint"], tmp_path / "bad.npz", lambda m: m["config"].update({field: value}))
    with pytest.raises(CheckpointError, match="its configuration is not valid: " + re.escape(message)):
        load_checkpoint(tmp_path / "bad.npz")


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(vocab="abc"), "vocabulary"), (lambda m: m.update(vocab=["a", "a"]), "vocabulary"),
    (lambda m: m.update(config=[1]), "configuration is not a JSON object"),
    (lambda m: m.update(epoch="2"), "epoch count"), (lambda m: m.update(history={}), "history")])
def test_a_checkpoint_of_the_wrong_shape_is_refused(tmp_path, change, message):
    first, _ = run(tmp_path, small(epochs=1))
    rewrite_meta(first["checkpoint"], tmp_path / "bad.npz", change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad.npz")


def test_validation_is_bounded_and_stated(tmp_path):
    result, text = run(tmp_path, small(epochs=1, max_valid_chars=150))
    assert "training on 3600, validating on 150;" in text
    _, _, config, _, _ = load_checkpoint(result["checkpoint"])
    assert config.max_valid_chars == 150


def test_sample_at_a_tiny_temperature_is_greedy(tmp_path):
    result, _ = run(tmp_path, small(epochs=1))
    model, vocab, *_ = load_checkpoint(result["checkpoint"])
    assert sample(model, vocab, 30, 5e-324, "the", rng=1) == sample(model, vocab, 30, 1e-6, "the", rng=2)


@pytest.mark.parametrize("body, message", [
    ("return None", "must return the new state.*returned NoneType"),
    ("return np.zeros((x.shape[0], self.hidden_size))", "must return the new state.*returned ndarray"),
    ("raise KeyError('boom')", "failed .*KeyError: 'boom'"),
    ("return self.inner(x, h)[:, :2]",
     r"returned a state of shape \(2, 2\); expected \(batch, hidden_size\) = \(2, 4\)")])
def test_a_user_cell_that_misbehaves_is_named(tmp_path, monkeypatch, body, message):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "odd_cells_" + re.sub(r"\W", "_", body)[:12]
    (tmp_path / f"{name}.py").write_text(
        "import numpy as np\nfrom tinygrad_rnn import nn\n"
        "class Odd(nn.Module):\n"
        "    def __init__(self, input_size, hidden_size, rng=None, dtype=None):\n"
        "        self.inner = nn.RNNCell(input_size, hidden_size, rng=rng, dtype=dtype)\n"
        "        self.hidden_size = hidden_size\n"
        "    def forward(self, x, h=None):\n"
        f"        {body}\n")
    with pytest.raises(ValueError, match=rf"cell '{name}:Odd': forward\(x, state\) " + message):
        make_cell(f"{name}:Odd", 3, 4, np.random.default_rng(0), np.float64)


def test_a_model_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match="hidden-size 1000000000 .* needs about .* GiB"):
        CharLM(50, small(hidden_size=10**9))


def test_a_run_that_cannot_start_leaves_no_lock(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "no_zero_cells_for_tests.py").write_text(
        "from tinygrad_rnn import nn\n"
        "class NoZero(nn.Module):\n"
        "    def __init__(self, input_size, hidden_size, rng=None, dtype=None):\n"
        "        self.inner = nn.RNNCell(input_size, hidden_size, rng=rng, dtype=dtype)\n"
        "    def forward(self, x, h=None):\n"
        "        return self.inner(x, h)\n")
    with pytest.raises(ValueError, match="initial_state"):
        run(tmp_path, small(cell="no_zero_cells_for_tests:NoZero", trace=True))
    assert not (tmp_path / "run" / "train.lock").exists()
    result, _ = run(tmp_path, small(epochs=1))
    assert result["checkpoint"]


def test_numpy_numbers_in_a_config_are_stored_as_plain_ones(tmp_path):
    result, _ = run(tmp_path, small(epochs=1, hidden_size=np.int64(16), lr=np.float32(0.01), trace=np.False_))
    config = load_checkpoint(result["checkpoint"])[2]
    assert config.hidden_size == 16 and type(config.hidden_size) is int and type(config.lr) is float


def test_train_is_set_up_epochs_and_finish():
    import inspect
    from tinygrad_rnn import training
    source = inspect.getsource(training.train)
    body = source.split('"""')[2]                            # after the docstring
    assert "_setup(" in body and "_one_epoch(run)" in body and "_finish(run" in body
    assert len(body.strip().splitlines()) <= 40
    assert "plot" not in inspect.getsource(training)         # plotting belongs to the command line
