"""The command line: every subcommand run with small settings and its outputs checked; bad arguments exit 2.

Most runs call ``main(argv)`` in-process; a few run ``python -m tinygrad_rnn`` as a real subprocess.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_rnn.cli import main
from tinygrad_rnn.data import default_corpus
from tinygrad_rnn.training import load_checkpoint

SMALL = ["--hidden-size", "32", "--embed-size", "16", "--seq-len", "16", "--batch-size", "8", "--lr", "0.01",
         "--sample-length", "40", "--no-progress"]


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``tinygrad-rnn argv``."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(default_corpus()[:4000], encoding="utf-8")
    return path


@pytest.fixture
def trained(tmp_path, corpus, capsys):
    status, out, err = cli(capsys, "train", "--text", corpus, "--cell", "rnn", "--epochs", 3, "--out",
                           tmp_path / "run", *SMALL)
    assert status == 0, err
    return tmp_path / "run", out


def test_train(trained):
    run, out = trained
    valid, base = map(float, re.search(r"validation perplexity ([\d.]+) \(unigram baseline ([\d.]+)\)", out).groups())
    assert valid < 0.75 * base
    assert re.search(r"epoch 3: train perplexity [\d.]+, valid perplexity [\d.]+", out)
    assert "sample:\n" in out
    sample = out.split("sample:\n", 1)[1].split("\nvalidation perplexity")[0]
    assert len(sample) == 41
    model, vocab, config, meta, _ = load_checkpoint(run / "model.npz")
    assert config.cell == "rnn" and config.hidden_size == 32 and meta["epoch"] == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and records[-1]["valid_perplexity"] == pytest.approx(valid, abs=0.006)
    assert f"checkpoint: {run / 'model.npz'}" in out
    pytest.importorskip("matplotlib")
    assert (run / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_and_sample(trained, corpus, capsys):
    run, _ = trained
    status, out, err = cli(capsys, "train", "--text", corpus, "--resume", run / "model.npz", "--epochs", 4,
                           "--out", run, "--no-progress")
    assert status == 0, err
    assert "after 4 epochs" in out and "epoch 4:" in out and "epoch 3:" not in out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4

    status, out, err = cli(capsys, "sample", run / "model.npz", "--length", 60, "--prime", "The ", "--seed", 3)
    assert status == 0, err
    text = out[:-1]                                   # print's newline
    assert text.startswith("The ") and len(text) == 64
    assert cli(capsys, "sample", run / "model.npz", "--length", 60, "--prime", "The ", "--seed", 3)[1] == out


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradcheck(capsys, cell):
    status, out, err = cli(capsys, "gradcheck", "--cell", cell, "--steps", 3)
    assert status == 0, err
    names = {"rnn": ["Wx", "Wh", "b"], "lstm": ["Wx", "Wh", "b"], "gru": ["Wx", "Wh", "bx", "bh"]}[cell]
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith(("PASS", "FAIL"))}
    assert set(names) <= set(rows) and "xs" in rows and "state0" in rows
    assert all(line.endswith("PASS") for line in rows.values())
    assert "all gradients agree" in out


BROKEN = '''
import numpy as np
from tinygrad_rnn import Tensor, nn

def bad_tanh(a):
    y = np.tanh(a.data)
    # the derivative of tanh is 1 - y**2; this one forgets the square
    return Tensor._make(y, (a,), lambda g: (g * (1 - y),), "bad_tanh")

class BrokenCell(nn.Module):
    def __init__(self, input_size, hidden_size, rng=None, dtype=None):
        self.cell = nn.RNNCell(input_size, hidden_size, rng=rng, dtype=dtype)
        self.input_size, self.hidden_size = input_size, hidden_size
    def initial_state(self, batch):
        return self.cell.initial_state(batch)
    def forward(self, x, h=None):
        h = self.initial_state(x.shape[0]) if h is None else h
        return bad_tanh(x @ self.cell.Wx + h @ self.cell.Wh + self.cell.b)

def helper():
    return 1
'''


def test_gradcheck_catches_a_broken_user_cell(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_cells.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    status, out, err = cli(capsys, "gradcheck", "--cell", "broken_cells:BrokenCell")
    assert status == 1
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith(("PASS", "FAIL"))}
    assert {"cell.Wx", "cell.Wh", "cell.b", "xs"} <= set(rows)
    assert all(rows[k].endswith("FAIL") for k in ("cell.Wx", "cell.Wh", "cell.b", "xs"))
    assert "all gradients agree" not in out


def test_bptt(tmp_path, capsys):
    status, out, err = cli(capsys, "bptt", "--steps", 30, "--out", tmp_path)
    assert status == 0, err
    assert "loss 12.0620612611688 by graph, 12.0620612611688 by hand" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.endswith(("PASS", "FAIL"))}
    assert set(rows) == {"Wxh", "Whh", "Bh", "Wy", "By"} and all(r.endswith("PASS") for r in rows.values())
    table = [line.split() for line in out.split("Gradient through time", 1)[1].splitlines()
             if re.match(r"^\s*\d+\s", line)]
    assert [int(r[0]) for r in table] == list(range(30))
    vanishing = [float(r[1]) for r in table]
    exploding = [float(r[3]) for r in table]
    assert vanishing[0] < 1e-3 * vanishing[-1]
    assert exploding[0] > 100 * exploding[-1]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "gradient_through_time.png").read_bytes()[:4] == b"\x89PNG"


def test_graph_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(capsys, "graph")
    assert status == 0, err
    assert os.listdir(tmp_path) == ["runs"]                  # into runs/, not the current folder
    text = (tmp_path / "runs" / "graph.dot").read_text()
    assert text.startswith("digraph") and text.rstrip().endswith("}") and text.count("{") == text.count("}")
    assert [f't = {t}' for t in range(4)] == re.findall(r'label="(t = \d)"', text)
    nodes = dict(re.findall(r'^\s*(n\d+) \[label="([^"]*)"', text, re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", text, re.M)
    assert all(a in nodes and b in nodes for a, b in edges)
    assert any(label.startswith("Wh\\n(4, 4)\\n|grad| = ") for label in nodes.values())
    assert f"({len(edges)} edges)" in out
    assert "x(3)" in text and "h(-1)" in text
    if "wrote runs/graph.svg" in out:                        # Graphviz installed and working: an SVG next to it
        assert "<svg" in (tmp_path / "runs" / "graph.svg").read_text()
    elif shutil.which("dot"):                                # a dot that fails is reported, the .dot kept
        assert "Graphviz could not render" in err


@pytest.mark.parametrize("script", ["#!/bin/sh\necho 'dot: broken install' >&2\nexit 3\n", None])
def test_graph_reports_a_dot_that_fails(tmp_path, capsys, monkeypatch, script):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text(script or "not a program")
    fake.chmod(0o755 if script else 0o644)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(fake) if name == "dot" else None)
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(capsys, "graph")
    assert status == 0 and (tmp_path / "runs" / "graph.dot").read_text().startswith("digraph")
    assert "Graphviz could not render runs/graph.dot" in err and "wrote runs/graph.svg" not in out
    if script:
        assert "broken install" in err


def test_graph_lstm_elsewhere(tmp_path, capsys):
    status, _, err = cli(capsys, "graph", "--cell", "lstm", "--steps", 2, "--output", tmp_path / "g" / "lstm.dot")
    assert status == 0, err
    assert re.findall(r'label="(t = \d)"', (tmp_path / "g" / "lstm.dot").read_text()) == ["t = 0", "t = 1"]


def bad(capsys, *argv):
    status, out, err = cli(capsys, *argv)
    assert status == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_arguments(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "one.txt").write_text("x")
    (tmp_path / "same.txt").write_text("zzzzzzzz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    (tmp_path / "broken_cells.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "does not exist" in bad(capsys, "train", "--text", tmp_path / "missing.txt")
    assert "at least 2 characters" in bad(capsys, "train", "--text", tmp_path / "empty.txt")
    assert "at least 2 characters" in bad(capsys, "train", "--text", tmp_path / "one.txt")
    assert "2 distinct characters" in bad(capsys, "train", "--text", tmp_path / "same.txt")
    assert "unknown cell 'transformer'" in bad(capsys, "train", "--cell", "transformer")
    assert "unknown cell 'transformer'" in bad(capsys, "gradcheck", "--cell", "transformer")
    assert "cannot import module" in bad(capsys, "graph", "--cell", "no_such_module_xyz:Cell")
    assert "no attribute 'Missing'" in bad(capsys, "gradcheck", "--cell", "broken_cells:Missing")
    assert "helper(input_size, hidden_size, rng=..., dtype=...) failed: TypeError" in bad(
        capsys, "train", "--cell", "broken_cells:helper")
    assert "expected a whole number, got 'ten'" in bad(capsys, "train", "--hidden-size", "ten")
    assert "at least 1" in bad(capsys, "train", "--epochs", "0")
    assert "expected a positive number" in bad(capsys, "train", "--lr", "-1")
    assert "expected a number" in bad(capsys, "sample", "x.npz", "--temperature", "hot")
    assert "invalid choice" in bad(capsys, "train", "--optimizer", "rmsprop")
    assert "does not exist" in bad(capsys, "sample", tmp_path / "missing.npz")
    assert "not a readable .npz" in bad(capsys, "sample", tmp_path / "junk.npz")
    assert "too short" in bad(capsys, "train", "--text", _short(tmp_path))
    assert "at least 0, got '-1'" in bad(capsys, "train", "--clip", "-1")
    (tmp_path / "a_file").write_text("x")
    assert "a_file" in bad(capsys, "graph", "--output", tmp_path / "a_file" / "graph.dot")
    assert "required" in bad(capsys)
    assert "invalid choice" in bad(capsys, "fly")


def _short(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 5)
    return path


@pytest.mark.parametrize("command", ["train", "sample", "gradcheck", "bptt", "graph"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit:
        main([command, "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tinygrad-rnn {command}")


def python_m(*argv, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "tinygrad_rnn", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_subprocess(tmp_path, corpus):
    done = python_m("train", "--text", corpus, "--epochs", 1, "--out", "run", *SMALL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "validation perplexity" in done.stdout and (tmp_path / "run" / "model.npz").exists()
    done = python_m("sample", "run/model.npz", "--length", 20, cwd=tmp_path)
    assert done.returncode == 0 and len(done.stdout.rstrip("\n")) == 21
    done = python_m("graph", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "runs" / "graph.dot").read_text().startswith("digraph")
    done = python_m("train", "--text", tmp_path / "nope.txt", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_train_defaults_on_the_shipped_corpus(tmp_path, capsys):
    # the no-argument run, cut to three updates: the shipped corpus and the default model
    status, out, err = cli(capsys, "train", "--max-steps", 3, "--out", tmp_path, "--no-progress")
    assert status == 0, err
    assert f"text: {len(default_corpus())} characters" in out
    assert "model: lstm cell, hidden 192" in out and "after 1 epochs, 3 steps" in out
    _, _, config, meta, _ = load_checkpoint(tmp_path / "model.npz")
    assert config.max_steps == 3 and meta["step"] == 3


def test_ctrl_c_exits_130_and_keeps_the_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    from tinygrad_rnn import optim
    real, calls = optim.clip_grad_norm, {"n": 0}

    def interrupting(params, max_norm):
        calls["n"] += 1
        if calls["n"] == 30:                               # in the second epoch (28 steps each)
            raise KeyboardInterrupt
        return real(params, max_norm)

    monkeypatch.setattr(optim, "clip_grad_norm", interrupting)
    handler = signal.getsignal(signal.SIGINT)
    try:
        status, out, err = cli(capsys, "train", "--text", corpus, "--epochs", 3, "--out", tmp_path, *SMALL)
        assert signal.getsignal(signal.SIGINT) is handler    # called from Python: the caller's handler stays
        assert status == 130 and "interrupted" in out
        assert load_checkpoint(tmp_path / "model.npz")[3]["epoch"] == 1
        # run as the program (main() reading sys.argv): once settled, a further Ctrl-C ends the process by
        # the signal, never as a KeyboardInterrupt inside the interpreter's teardown (a weakref callback
        # prints a traceback there and goes on)
        calls["n"] = 0
        monkeypatch.setattr(sys, "argv", ["tinygrad-rnn", "train", "--text", str(corpus), "--epochs", "3",
                                          "--out", str(tmp_path / "again"), *map(str, SMALL)])
        assert main() == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, handler)


def test_train_trace_gives_the_eager_run(tmp_path, corpus, capsys):
    outs = {}
    for flag in ((), ("--trace",)):
        status, out, err = cli(capsys, "train", "--text", corpus, "--cell", "gru", "--max-steps", 5,
                               "--out", tmp_path / str(len(flag)), *SMALL, *flag)
        assert status == 0, err
        outs[flag] = out.split("validation perplexity")[-1].split("\n")[0]
        assert load_checkpoint(tmp_path / str(len(flag)) / "model.npz")[2].trace == bool(flag)
    assert outs[()] == outs[("--trace",)]   # the same perplexity, to every printed digit
    program = tmp_path / "1" / "traced_step.py"                      # the traced step, next to the checkpoint
    assert not (tmp_path / "0" / "traced_step.py").exists()
    source = program.read_text()
    compile(source, str(program), "exec")
    assert "import numpy as np" in source and "def " in source
    a = load_checkpoint(tmp_path / "0" / "model.npz")[0]
    b = load_checkpoint(tmp_path / "1" / "model.npz")[0]
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


# ---------------------------------------------------------------------- runs, checkpoints and messages
def test_a_fresh_run_in_a_folder_with_a_run_is_refused(trained, corpus, capsys):
    run, _ = trained
    before = (run / "model.npz").read_bytes(), (run / "metrics.jsonl").read_bytes()
    err = bad(capsys, "train", "--text", corpus, "--out", run, *SMALL)
    assert "already holds a run" in err and f"--resume {run / 'model.npz'}" in err and "--overwrite" in err
    assert ((run / "model.npz").read_bytes(), (run / "metrics.jsonl").read_bytes()) == before
    status, out, err = cli(capsys, "train", "--text", corpus, "--out", run, "--epochs", 1, "--overwrite", *SMALL)
    assert status == 0, err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_checkpoint(run / "model.npz")[3]["epoch"] == 1


def test_resume_names_each_contradicting_option(trained, corpus, capsys):
    run, _ = trained
    err = bad(capsys, "train", "--text", corpus, "--resume", run / "model.npz", "--out", run, "--hidden-size", 64,
              "--lr", 0.1, "--cell", "gru", "--no-progress")
    assert "--hidden-size 64 (the checkpoint's: 32)" in err and "--lr 0.1 (the checkpoint's: 0.01)" in err
    assert "--cell gru (the checkpoint's: rnn)" in err
    err = bad(capsys, "train", "--resume", run / "model.npz", "--out", run, "--no-progress")   # the shipped corpus
    assert "lacks" in err or "another text" in err
    # options equal to the checkpoint's are no contradiction; --epochs may change
    status, out, err = cli(capsys, "train", "--text", corpus, "--resume", run / "model.npz", "--out", run,
                           "--hidden-size", 32, "--cell", "rnn", "--epochs", 4, "--no-progress")
    assert status == 0, err
    assert "after 4 epochs" in out


def test_sample_needs_a_user_cell_given_again_and_never_imports_one(trained, tmp_path, capsys):
    import sys
    from test_training import rewrite_meta
    run, _ = trained
    rewrite_meta(run / "model.npz", tmp_path / "zen.npz", lambda m: m["config"].update(cell="this:x"))
    sys.modules.pop("this", None)
    err = bad(capsys, "sample", tmp_path / "zen.npz")
    assert "--cell this:x" in err and "this" not in sys.modules
    rewrite_meta(run / "model.npz", tmp_path / "typed.npz", lambda m: m["config"].update(seq_len="16"))
    assert "seq-len must be int, got '16'" in bad(capsys, "sample", tmp_path / "typed.npz")


class Recorder:
    """A stdout that records what was written at each flush."""

    def __init__(self):
        self.text, self.flushed = "", []

    def write(self, s):
        self.text += s

    def flush(self):
        self.flushed.append(len(self.text))


def test_sample_streams_its_text(trained, monkeypatch):
    run, _ = trained
    out = Recorder()
    monkeypatch.setattr("sys.stdout", out)
    assert main(["sample", str(run / "model.npz"), "--length", "1000", "--seed", "1", "--temperature", "5e-324"]) == 0
    assert len(out.text) == 1002 and len([n for n in out.flushed if 0 < n < 1000]) >= 10


def test_numbers_and_folders_are_named(tmp_path, capsys):
    assert "argument --seed: expected a number of at least 0, got '-1'" in bad(capsys, "train", "--seed", "-1")
    assert "argument --seed" in bad(capsys, "sample", "x.npz", "--seed", "-1")
    assert "argument --epochs: expected a whole number of at most 1000000" in bad(capsys, "train", "--epochs", 10**23)
    assert "--output must name a file, got ''" in bad(capsys, "graph", "--output", "")
    (tmp_path / "a_file").write_text("x")
    status, out, err = cli(capsys, "bptt", "--out", tmp_path / "a_file")
    assert status == 2 and out == "" and "--out" in err and "is a file, not a folder" in err
    err = bad(capsys, "train", "--hidden-size", 10**9, "--out", tmp_path / "big")
    assert "hidden-size 1000000000" in err and "GiB" in err
    assert "not a regular file" in bad(capsys, "train", "--text", "/dev/zero", "--out", tmp_path / "zero")


CRASHING = '''
import numpy as np
from tinygrad_rnn import Tensor, nn

class Raises(nn.Module):
    def __init__(self, input_size, hidden_size, rng=None, dtype=None):
        self.cell = nn.RNNCell(input_size, hidden_size, rng=rng, dtype=dtype)
    def forward(self, x, h=None):
        raise KeyError("no such gate")

class Wide(Raises):
    def forward(self, x, h=None):
        return Tensor(np.zeros((x.shape[0], 7)))

class BadBackward(Raises):
    def forward(self, x, h=None):
        y = self.cell(x, h)
        return Tensor._make(y.data, (y,), lambda g: (g[:1],), "bad_backward")
'''


def test_a_crashing_cell_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, corpus):
    (tmp_path / "crashing_cells.py").write_text(CRASHING)
    monkeypatch.syspath_prepend(str(tmp_path))
    for command in ("gradcheck", "graph"):
        assert "KeyError: 'no such gate'" in bad(capsys, command, "--cell", "crashing_cells:Raises",
                                                 "--output" if command == "graph" else "--steps",
                                                 tmp_path / "g.dot" if command == "graph" else 2)
    assert "KeyError" in bad(capsys, "train", "--cell", "crashing_cells:Raises", "--text", corpus, "--out",
                             tmp_path / "r", *SMALL)
    err = bad(capsys, "gradcheck", "--cell", "crashing_cells:Wide")
    assert "returned a state of shape (2, 7); expected (batch, hidden_size) = (2, 4)" in err
    err = bad(capsys, "gradcheck", "--cell", "crashing_cells:BadBackward")
    assert "cell 'crashing_cells:BadBackward' failed while being checked" in err


def test_a_diverging_run_stops_in_one_line(tmp_path, corpus, capsys):
    status, out, err = cli(capsys, "train", "--text", corpus, "--out", tmp_path / "r", *SMALL, "--optimizer", "sgd",
                           "--lr", "1e30", "--clip", 0)
    assert status == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "became" in err and "no checkpoint was written" in err
    assert os.listdir(tmp_path / "r") == []


def test_graph_says_it_renders_and_can_skip_it(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: calls.append(argv) or
                        subprocess.CompletedProcess(argv, 0, "", ""))
    status, out, _ = cli(capsys, "graph", "--output", tmp_path / "g.dot")
    assert status == 0 and "rendering" in out and "--no-render" in out and len(calls) == 1
    status, out, _ = cli(capsys, "graph", "--output", tmp_path / "g.dot", "--no-render")
    assert status == 0 and "rendering" not in out and len(calls) == 1


def test_bptt_names_a_saturated_curve_for_what_it_shows(tmp_path, capsys):
    status, out, err = cli(capsys, "bptt", "--steps", 200, "--out", tmp_path)
    assert status == 0, err
    assert "radius 1.3 (exploding)" not in out and "radius 1.3 (tanh saturated)" in out
    assert re.search(r"note: radius 1.3: \|h_t\| passes 0.5 at t = \d+, where tanh starts to saturate", out)
    status, out, err = cli(capsys, "bptt", "--out", tmp_path)     # the default 40 steps: the names hold
    assert "radius 1.3 (exploding)" in out and "note:" not in out


def table(out):
    table = out.split("Gradient through time", 1)[1].splitlines()
    return [line.split() for line in table if re.match(r"^\s*\d+\s", line)]


def test_bptt_radii_a_capped_table_and_runs_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(capsys, "bptt", "--steps", 100, "--radii", "0.5,2")
    assert status == 0, err
    assert "radius 0.5 (vanishing)" in out and "radius 2.0 (" in out and "radius 1.3" not in out
    rows = table(out)
    assert len(rows) == 40 and rows[0][0] == "0" and rows[-1][0] == "99" and len(rows[0]) == 3
    assert "(40 of 100 steps shown; --all prints every one)" in out
    status, out, err = cli(capsys, "bptt", "--steps", 100, "--all", "--radii", "0.9")
    assert [int(r[0]) for r in table(out)] == list(range(100)) and "steps shown" not in out
    assert os.listdir(tmp_path) == ["runs"]                  # the picture goes to runs/, not the current folder
    assert "argument --radii: expected a positive number, got '0'" in bad(capsys, "bptt", "--radii", "0,1")


def test_one_map_of_cell_names(capsys, monkeypatch, tmp_path):
    from tinygrad_rnn import nn
    from tinygrad_rnn.training import make_cell
    assert nn.CELLS == {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
    monkeypatch.setitem(nn.CELLS, "gru2", nn.GRUCell)   # a name added to the map is known everywhere
    assert isinstance(make_cell("gru2", 3, 4, np.random.default_rng(0), np.float64), nn.GRUCell)
    status, out, err = cli(capsys, "gradcheck", "--cell", "gru2", "--steps", 2)
    assert status == 0 and "all gradients agree" in out
    with pytest.raises(SystemExit):
        main(["graph", "--help"])
    assert "rnn, lstm, gru, gru2 or MODULE:CALLABLE" in capsys.readouterr().out
    assert "use rnn, lstm, gru, gru2 or MODULE:CALLABLE" in bad(capsys, "train", "--cell", "nope",
                                                               "--out", tmp_path)
