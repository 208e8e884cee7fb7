"""The shipped corpus, the vocabulary, the split, truncated-BPTT batches and the unigram baseline."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinygrad_rnn import data
from tinygrad_rnn.data import DataError, Vocab, bptt_batches, default_corpus, read_text, split, unigram_perplexity


def test_default_corpus_is_shipped_prose():
    text = default_corpus()
    assert 40_000 <= len(text) <= 80_000
    assert text.isascii() and text.count("\n\n") > 20
    words = text.split()
    assert len(words) > 7000 and len(set(words)) > 1500   # prose, not a repeated phrase


@given(st.text(min_size=1, max_size=60))
def test_vocab_round_trip(text):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert ids.dtype == data.id_dtype(len(vocab)) and ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    assert len(vocab) == len(set(text)) and vocab.chars == sorted(set(text))
    assert ids.min() >= 0 and ids.max() < len(vocab)


def test_vocab_errors():
    with pytest.raises(DataError, match="'z'"):
        Vocab.from_text("abc").encode("abz")
    with pytest.raises(DataError, match="distinct"):
        Vocab(["a", "a"])


@pytest.mark.parametrize("text, message", [("", "at least 2 characters"), ("x", "at least 2 characters"),
                                          ("aaaa", "2 distinct characters")])
def test_too_little_text(tmp_path, text, message):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_text(path)


def test_read_text_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="directory"):
        read_text(tmp_path)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(tmp_path / "bin")
    (tmp_path / "ok.txt").write_text("hello world", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "hello world"


def test_split():
    ids = np.arange(100)
    train, valid = split(ids, 0.1)
    assert list(train) == list(range(90)) and list(valid) == list(range(90, 100))
    with pytest.raises(DataError):
        split(ids, 1.0)


@given(n=st.integers(2, 300), batch=st.integers(1, 6), seq=st.integers(1, 9))
def test_bptt_batches_lanes_continue(n, batch, seq):
    ids = np.arange(n)
    lane = (n - 1) // batch
    if lane // seq == 0:
        with pytest.raises(DataError, match="too short"):
            list(bptt_batches(ids, batch, seq))
        return
    batches = list(bptt_batches(ids, batch, seq))
    assert len(batches) == lane // seq
    for k, (x, y) in enumerate(batches):
        assert x.shape == y.shape == (batch, seq)
        np.testing.assert_array_equal(y, x + 1)          # targets are the next character
        # row i reads lane i from offset i * lane, and batch k continues where batch k-1 stopped
        np.testing.assert_array_equal(x[:, 0], np.arange(batch) * lane + k * seq)
        np.testing.assert_array_equal(np.diff(x, axis=1), 1)


def test_unigram_perplexity():
    # uniform counts over 4 symbols: perplexity 4 exactly
    train = np.array([0, 1, 2, 3] * 5)
    assert unigram_perplexity(train, np.array([0, 1, 2, 3]), 4) == pytest.approx(4.0)
    # add-one smoothing: counts (3, 1) -> p = (4/6, 2/6)
    got = unigram_perplexity(np.array([0, 0, 0, 1]), np.array([0, 1]), 2)
    assert got == pytest.approx(math.exp(-(math.log(4 / 6) + math.log(2 / 6)) / 2))
    text = default_corpus()
    vocab = Vocab.from_text(text)
    tr, va = split(vocab.encode(text))
    assert 10 < unigram_perplexity(tr, va, len(vocab)) < len(vocab)


def test_public_names():
    for name in data.__all__:
        assert hasattr(data, name)


def test_ids_are_compact():
    assert Vocab.from_text("hello").encode("hello").dtype == np.uint8
    wide = "".join(map(chr, range(0x100, 0x100 + 300)))            # 300 characters: beyond a byte
    ids = Vocab.from_text(wide).encode(wide[::-1])
    assert ids.dtype == np.uint16 and list(ids) == list(range(299, -1, -1))
    assert data.id_dtype(2**16) == np.uint16 and data.id_dtype(2**16 + 1) == np.int32
    text = "ab\U0001F600c" * 3                                      # a character beyond the BMP
    assert Vocab.from_text(text).decode(Vocab.from_text(text).encode(text)) == text


def test_a_device_is_not_read(tmp_path):
    import os
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    with pytest.raises(DataError, match="not a regular file"):
        read_text("/dev/zero")
    os.mkfifo(tmp_path / "pipe")                 # opening it would wait for a writer: refused before that
    with pytest.raises(DataError, match="not a regular file"):
        read_text(tmp_path / "pipe")
