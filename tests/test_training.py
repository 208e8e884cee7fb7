"""The character model's training loop: learning, checkpoints without pickle, resuming, Ctrl-C, sampling."""
import json
import math

import numpy as np
import pytest

from tinygrad_rnn import nn, optim
from tinygrad_rnn.data import DataError, Vocab, default_corpus
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
    result = train(TEXT, config, out_dir=tmp_path / name, progress=False, plot=False, log=lines.append, **kw)
    return result, "\n".join(lines)


def test_learns_writes_checkpoint_and_metrics(tmp_path):
    result, text = run(tmp_path, small(epochs=3))
    assert result["epochs"] == 3 and not result["interrupted"]
    assert result["valid_perplexity"] < 0.75 * result["unigram_perplexity"]
    assert "unigram baseline perplexity" in text and "epoch 3:" in text
    records = [json.loads(line) for line in open(result["metrics"])]
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
    assert len(open(again["metrics"]).read().splitlines()) == 4
    a, b = load_checkpoint(straight["checkpoint"])[0], load_checkpoint(again["checkpoint"])[0]
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)   # Adam's moments and step count restored
    assert again["valid_perplexity"] == straight["valid_perplexity"]
    # resuming into another folder carries the whole history into its metrics file
    elsewhere, _ = run(tmp_path, None, "elsewhere", resume=again["checkpoint"], overrides={"epochs": 5})
    assert [json.loads(line)["epoch"] for line in open(elsewhere["metrics"])] == [1, 2, 3, 4, 5]


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
        train(TEXT + "\u00e9", out_dir=tmp_path / "x", resume=result["checkpoint"], progress=False, plot=False,
              log=lambda s: None)


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 0, "hidden-size"), ("lr", 0.0, "lr"), ("optimizer", "rmsprop", "optimizer"),
    ("dtype", "float16", "dtype"), ("valid_fraction", 1.0, "valid-fraction"), ("temperature", 0, "temperature")])
def test_config_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).check()


def test_text_too_short(tmp_path):
    with pytest.raises(DataError, match="too short"):
        train("abcdefghij" * 3, small(batch_size=8, seq_len=16), out_dir=tmp_path, progress=False, plot=False,
              log=lambda s: None)
    with pytest.raises(DataError, match="2 distinct"):
        train("aaaa", small(), out_dir=tmp_path, progress=False, plot=False, log=lambda s: None)


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


def test_progress_bar_and_plot(tmp_path, capsys):
    pytest.importorskip("tqdm")
    result = train(TEXT, small(epochs=2), out_dir=tmp_path, progress=True, plot=True)
    out, err = capsys.readouterr()
    assert "epoch 1:" in out and "epoch 2:" in out      # epoch lines on stdout, above the bar
    assert "step" in err and "loss=" in err              # the bar, with the live loss, on stderr
    if result["plot"] is not None:                       # matplotlib is the optional plot extra
        assert open(result["plot"], "rb").read(4) == b"\x89PNG"


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
@pytest.mark.parametrize("fused", [True, False])
def test_traced_training_gives_the_eager_parameters(tmp_path, cell, fused):
    # the traced step replays the engine's own numpy calls in its order: equal to the last bit
    eager, _ = run(tmp_path, small(cell=cell, epochs=2, fused=fused), "eager")
    traced, _ = run(tmp_path, small(cell=cell, epochs=2, fused=fused, trace=True), "traced")
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

    class NoZeroState(nn.Module):
        def forward(self, x, state):
            return x
    model.rnn.cell = NoZeroState()
    with pytest.raises(ValueError, match="initial_state"):
        TracedStep(model)
