"""Every example, run with small settings, and what it prints and returns checked.

The examples are scripts (examples/*.py, not a package): each is loaded from its
path and its ``main(argv, out=...)`` called; one is also run as a subprocess to
check that the scripts run as scripts.
"""
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, *argv):
    """(result, printed text) of examples/<name>.py main(argv)."""
    lines = []
    result = load(name).main(list(argv), out=lambda s="": lines.append(str(s)))
    return result, "\n".join(lines)


# ---------------------------------------------------------------- hello

def test_hello_reproduces_the_textbook_and_catches_the_mistakes():
    result, text = run("hello", "--hidden", "3", "--steps", "2000", "--log-every", "1000")
    r = result[3]
    assert r["initial_loss"] == pytest.approx(12.062061261168791, abs=1e-12)
    assert "12.062061261168791" in text
    assert r["report"].passed                              # autograd == hand-derived BPTT
    assert max(row["max_abs"] for row in r["report"].rows) < 1e-12
    assert r["losses"][-1] == pytest.approx(0.15103531464, abs=1e-9)
    assert r["prediction"] == "ello" and "'ello'" in text
    # the first update count after which the predictions read "ello", from the numpy reference
    from tinygrad_rnn.reference import hello_rnn
    X, Y = hello_rnn.hello_data()
    weights, first = hello_rnn.init_params(3), 0
    while hello_rnn.predict(weights, X) != "ello":
        grads = hello_rnn.loss_and_grads(weights, X, Y)[1]
        weights = {k: v - 0.005 * grads[k] for k, v in weights.items()}
        first += 1
    assert r["first_ello"] == first
    assert f"read 'ello' after {first} updates" in text
    over = result["mistakes"]["overwritten output gradients"]
    assert [row["name"] for row in over["report"].rows if not row["passed"]] == ["Wy"]
    assert over["final_loss"] > 2.0                       # where the correct gradient reaches 0.151
    typo = result["mistakes"]["single target row"]
    assert not typo["report"].passed
    assert typo["final_loss"] == pytest.approx(4 * np.log(4), abs=1e-3)
    assert text.count("FAIL") >= 5


def test_hello_hidden_6():
    result, text = run("hello", "--hidden", "6", "--steps", "2000", "--log-every", "0", "--no-mistakes")
    r = result[6]
    assert r["initial_loss"] == pytest.approx(15.950983723925223, abs=1e-12)
    assert r["report"].passed
    assert r["losses"][-1] == pytest.approx(0.04770066818, abs=1e-9)
    assert r["prediction"] == "ello"
    assert "mistakes" not in result


def test_hello_trained_weights_match_the_numpy_reference():
    from tinygrad_rnn.reference import hello_rnn
    result, _ = run("hello", "--hidden", "3", "--steps", "50", "--log-every", "0", "--no-mistakes")
    X, Y = hello_rnn.hello_data()
    expected, _ = hello_rnn.sgd_train(hello_rnn.init_params(3), X, Y, lr=0.005, steps=50)
    for k, v in expected.items():
        np.testing.assert_allclose(result[3]["params"][k], v, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- count the ones

def test_count_ones_gradients_and_training():
    result, text = run("count_ones", "--steps", "500", "--log-every", "250")
    assert result["report"].passed
    assert result["state_diff"] < 1e-8
    assert result["ratio"] == pytest.approx(100.0)        # the original's state gradients: N times
    assert result["losses"][-1] < 1e-4 < result["losses"][0]
    assert result["w_x"] == pytest.approx(1.0, abs=1e-2)
    assert result["w_rec"] == pytest.approx(1.0, abs=1e-2)
    assert result["counted"] == pytest.approx(6.0, abs=0.05)
    assert "PASS" in text and "FAIL" not in text


def test_count_ones_runs_as_a_script():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "count_ones.py"), "--steps", "20"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "w_rec" in proc.stdout and "PASS" in proc.stdout


# ---------------------------------------------------------------- char RNN

def test_char_rnn_hihello():
    result, text = run("char_rnn", "--text", "hihello", "--iterations", "20")
    assert len(result["losses"]) == 20 and text.count("prediction") == 20
    assert result["losses"][-1] < result["losses"][0] / 4
    assert result["final"] == "ihello"


def test_char_rnn_sentence():
    result, _ = run("char_rnn", "--iterations", "30")
    assert result["target"] == "My name is Ji Myung Hwa."
    assert result["losses"][-1] < result["losses"][0] / 4
    assert result["final"] == result["target"]


# ---------------------------------------------------------------- LSTM regression

def test_lstm_sequence_learns_and_plots_when_it_can(tmp_path):
    png = tmp_path / "lstm.png"
    result, text = run("lstm_sequence", "--epochs", "300", "--log-every", "100", "--out", str(png))
    assert result["losses"][-1] < result["losses"][0] / 10
    assert result["test_mse"] < 5e-3
    assert len(result["true"]) == 20 and len(result["predicted"]) == 20
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result["plot"] is None and not png.exists()
        assert "matplotlib is not installed" in text
    else:
        assert result["plot"] == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- RNN language model

def test_rnnlm_rnn_perplexity_falls():
    result, text = run("rnnlm", "--epochs", "10", "--hidden", "32", "--wordvec", "32")
    ppl = result["perplexities"]
    assert len(ppl) == 10 and text.count("perplexity") == 10
    assert ppl[0] < result["vocab_size"] * 1.5             # starts near uniform over the vocabulary
    assert all(b < a for a, b in zip(ppl, ppl[1:]))        # falls every epoch
    assert ppl[-1] < ppl[0] / 2


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnnlm_gated_cells_halve_perplexity(cell):
    result, _ = run("rnnlm", "--cell", cell, "--optim", "adam", "--lr", "0.01", "--epochs", "8",
                    "--hidden", "32", "--wordvec", "32", "--clip", "5")
    ppl = result["perplexities"]
    assert ppl[-1] < ppl[0] / 2
    assert len(result["sample"]) == 13


def test_rnnlm_lstm_halves_perplexity_on_the_shipped_corpus():
    pytest.importorskip("tinygrad_rnn.data")
    result, text = run("rnnlm", "--shipped", "--cell", "lstm", "--optim", "adam", "--lr", "0.01",
                       "--epochs", "3", "--hidden", "32", "--wordvec", "32", "--clip", "5")
    assert result["words"] == 1000                        # the book's "first 1,000 words"
    ppl = result["perplexities"]
    assert ppl[0] < result["vocab_size"] * 1.5
    assert ppl[-1] < ppl[0] / 2


def test_rnnlm_truncated_bptt_equals_the_books_numpy_rnnlm():
    """The example's model, with stateful nn.RNN, against the hand-written DLFS2 SimpleRnnlm:
    the same weights and batches give the same losses and gradients, chunk after chunk
    (forward state carried, backward cut), through SGD updates."""
    from tinygrad_rnn import functional as F
    from tinygrad_rnn.reference import time_rnn
    ex = load("rnnlm")
    ids, vocab = ex.build_corpus(ex.tokenize(ex.TEXT)[:120])
    model = ex.rnnlm_model(len(vocab), 6, 5, cell="rnn", rng=1)
    from tinygrad_rnn.training import CharLM
    assert isinstance(model, CharLM)                  # the example's model is the library's
    named = dict(model.named_parameters())

    def find(prefix, suffix):
        hits = [k for k in named if k.startswith(prefix) and k.endswith(suffix)]
        assert len(hits) == 1, (prefix, suffix, list(named))
        return hits[0]
    names = {"embed.W": find("embed.", ".W"), "rnn.Wx": find("rnn.", ".Wx"), "rnn.Wh": find("rnn.", ".Wh"),
             "rnn.b": find("rnn.", ".b"), "affine.W": find("out.", ".W"), "affine.b": find("out.", ".b")}
    assert sorted(names.values()) == sorted(named)
    ref = time_rnn.SimpleRnnlm(len(vocab), 6, 5, weights={k: named[v].data for k, v in names.items()})
    lr = 0.1
    for _ in range(2):
        model.reset_state()
        ref.reset_state()
        for xs, ts in time_rnn.truncated_batches(ids, batch_size=3, time_size=4):
            for p in named.values():
                p.grad = None
            loss = F.cross_entropy(model(xs), ts)
            loss.backward()
            ref_loss = ref.forward(xs, ts)
            ref.backward()
            assert loss.item() == pytest.approx(ref_loss, rel=1e-12)
            ref_grads = ref.named_grads()
            for k, v in names.items():
                np.testing.assert_allclose(named[v].grad, ref_grads[k], rtol=1e-9, atol=1e-12, err_msg=k)
            for k, v in names.items():
                named[v].data -= lr * named[v].grad
                ref.named_params()[k][...] -= lr * ref_grads[k]


def test_rnnlm_rejects_a_corpus_too_short(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a few words only .")
    with pytest.raises(SystemExit):
        run("rnnlm", "--corpus", str(corpus), "--epochs", "1")


# ---------------------------------------------------------------- custom cell

def test_custom_cell_gradchecks_and_learns():
    result, text = run("custom_cell", "--steps", "200", "--log-every", "100")
    assert "gradcheck passed" in text
    assert result["same_bits"] and "bit for bit" in text        # the @composite cell equals the plain one
    assert result["losses"][-1] < result["losses"][0] / 4
    assert result["accuracy"] > 0.9


def test_custom_cell_module_is_compiled_and_equals_its_plain_composition():
    import tinygrad_rnn
    from tinygrad_rnn import nn
    cell = load("custom_cell").MGU(2, 3, rng=0)
    xs = np.random.default_rng(1).standard_normal((2, 4, 2))

    def run_cell():
        cell.zero_grad()
        hs, _ = nn.unroll(cell, xs)
        op = hs._parents[0]._op
        (hs * hs).sum().backward()
        return op, {k: p.grad.copy() for k, p in cell.named_parameters()}
    op, grads = run_cell()
    with tinygrad_rnn.expanded():
        plain_op, plain_grads = run_cell()
    assert op == "unroll(mgu)" and plain_op != "unroll(mgu)"   # the compiled step: one node for the sequence
    for k in grads:
        np.testing.assert_array_equal(grads[k], plain_grads[k], err_msg=k)


def test_custom_cell_module_works_with_the_command_line(tmp_path, capsys):
    # docs/custom_cell.md shows these two commands
    from tinygrad_rnn.cli import main
    spec = f"{EXAMPLES / 'custom_cell.py'}:MGU"
    assert main(["gradcheck", "--cell", spec]) == 0
    assert "all gradients agree" in capsys.readouterr().out
    text = tmp_path / "text.txt"
    text.write_text("hello world, hello cells. " * 40, encoding="utf-8")
    assert main(["train", "--cell", spec, "--text", str(text), "--max-steps", "3", "--hidden-size", "8",
                 "--embed-size", "4", "--seq-len", "8", "--batch-size", "4", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run").exists()
