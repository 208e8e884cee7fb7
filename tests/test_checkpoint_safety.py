"""Real training processes interrupted with Ctrl-C (SIGINT) at random moments: what is left always loads.

Each interrupted run must leave a checkpoint that loads, a metrics.jsonl that restates
its history line for line, no temporary or lock file, and a last message that names
only what is on disk.  A tiny model on a tiny text keeps each process to a second or two.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tinygrad_rnn.cli import main
from tinygrad_rnn.data import default_corpus
from tinygrad_rnn.training import load_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")

TINY = ["--cell", "rnn", "--hidden-size", "8", "--embed-size", "4", "--seq-len", "8", "--batch-size", "4",
        "--epochs", "1000", "--no-progress"]
# the command line as installed, without matplotlib (its import would take most of each process's time)
LAUNCH = "import sys; sys.modules['matplotlib'] = None; from tinygrad_rnn.cli import main; sys.exit(main())"


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(default_corpus()[:3000], encoding="utf-8")
    return path


def start(*argv, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", LAUNCH, *map(str, argv)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(process, marker):
    """The lines the process prints up to the one that holds ``marker``."""
    lines = []
    while True:
        line = process.stdout.readline()
        assert line, f"the process ended before printing {marker!r}: {lines} {process.stderr.read()}"
        lines.append(line)
        if marker in line:
            return "".join(lines)


def interrupt(process, delay, times):
    time.sleep(delay)
    for _ in range(times):          # a second Ctrl-C soon after the first, as impatient people do
        process.send_signal(signal.SIGINT)
        time.sleep(0.002)
    out, err = process.communicate(timeout=60)
    return out, err


def check_left(folder, out, err, status):
    """What an interrupted run left in ``folder``; returns the epoch of its checkpoint (0: none)."""
    # 130: stopped by Ctrl-C; a second Ctrl-C that lands after the command has finished, as the interpreter
    # exits, ends the process by the signal itself
    assert status in (130, -signal.SIGINT), (status, out, err)
    assert "Traceback" not in err, err
    left = os.listdir(folder)
    assert not [n for n in left if n.endswith(".tmp") or n == "train.lock"], left
    if "model.npz" not in left:
        assert "metrics.jsonl" not in left, left
        assert "checkpoint:" not in out and "validation perplexity" not in out
        return 0
    _, _, _, meta, _ = load_checkpoint(folder / "model.npz")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert records == meta["history"] and len(records) == meta["epoch"]
    if "checkpoint:" in out:       # a message, if one was printed, names what is on disk
        assert f"after {meta['epoch']} epochs, {meta['step']} steps" in out, out
        assert f"checkpoint: {folder / 'model.npz'}" in out
    return meta["epoch"]


def test_ctrl_c_at_random_moments_leaves_a_run_that_loads_and_resumes(tmp_path, text):
    folder, rng, epochs = tmp_path / "run", random.Random(15), []
    for attempt in range(6):
        resume = ["--resume", folder / "model.npz"] if (folder / "model.npz").exists() else []
        process = start("train", "--text", text, "--out", folder, *TINY, *resume, cwd=tmp_path)
        wait_for(process, "model:")
        # Ctrl-C at any moment of the first epochs: during a step, a validation, a checkpoint write
        out, err = interrupt(process, rng.uniform(0.0, 0.6), times=1 + attempt % 2)
        epochs.append(check_left(folder, out, err, process.returncode))
    assert epochs == sorted(epochs) and epochs[-1] > 0, epochs   # each resumed run kept what the last one saved
    status = main(["train", "--text", str(text), "--out", str(folder), "--resume", str(folder / "model.npz"),
                   "--epochs", str(epochs[-1] + 1), "--no-progress"])
    assert status == 0
    assert load_checkpoint(folder / "model.npz")[3]["epoch"] == epochs[-1] + 1


def test_a_second_run_in_the_same_folder_is_refused_while_the_first_trains(tmp_path, text, capsys):
    folder = tmp_path / "run"
    first = start("train", "--text", text, "--out", folder, *TINY, cwd=tmp_path)
    wait_for(first, "model:")
    try:
        for extra in ([], ["--overwrite"]):
            status = main(["train", "--text", str(text), "--out", str(folder), *TINY, *extra])
            err = capsys.readouterr().err
            assert status == 2 and "another run is training" in err and "train.lock" in err
            assert f"process {first.pid}" in err
        wait_for(first, "epoch 2:")
    finally:
        out, err = interrupt(first, 0.0, times=1)
    assert check_left(folder, out, err, first.returncode) >= 2
