"""Text data for character language models: the shipped corpus, a vocabulary, truncated-BPTT batches."""
import importlib.resources
import math
import os
import stat

import numpy as np

__all__ = ["DataError", "default_corpus", "read_text", "check_text", "Vocab", "id_dtype", "split", "bptt_batches",
           "unigram_perplexity"]


class DataError(ValueError):
    """Text that cannot be used for training (missing, empty, too small)."""


def default_corpus():
    """The English prose shipped inside the package (written for it; free to redistribute)."""
    return importlib.resources.files("tinygrad_rnn").joinpath("data/corpus.txt").read_text(encoding="utf-8")


def read_text(path):
    """The UTF-8 text of ``path``, with a clear error when it is missing, unreadable or too small.

    Only a regular file is read: a device such as ``/dev/zero`` or a pipe never ends.
    """
    try:
        mode = os.stat(path).st_mode   # before opening: opening a pipe would wait for a writer
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise DataError(f"{str(path)!r} is not a regular file (a device, pipe or socket); give a text file")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"text file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{str(path)!r} is a directory, not a text file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"cannot read {str(path)!r}: {e.strerror}") from None
    except MemoryError:
        raise DataError(f"{str(path)!r} is too large to hold in memory") from None
    check_text(text, str(path))
    return text


def check_text(text, where="text"):
    """Raise DataError unless ``text`` has at least 2 characters, 2 of them distinct."""
    if len(text) < 2:
        raise DataError(f"{where}: needs at least 2 characters to learn from, got {len(text)}")
    if len(set(text)) < 2:
        raise DataError(f"{where}: needs at least 2 distinct characters, got only {text[0]!r}")


class Vocab:
    """The characters of a text, each with an integer id (sorted, so the ids are reproducible)."""

    def __init__(self, chars):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise DataError("Vocab: characters must be distinct")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        """The vocabulary of the distinct characters of ``text``, sorted."""
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        """The ids of the characters of ``text``, in the smallest integer type that holds them (``id_dtype``).

        DataError names the characters that are not in the vocabulary.
        """
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise DataError(f"characters {''.join(unknown)!r} are not in the vocabulary")
        dtype = id_dtype(len(self))
        if not text:
            return np.zeros(0, dtype)
        # a table from code point to id, applied to the text's code points in pieces: fast on a long
        # text, and the temporary UTF-32 copy stays small
        table = np.zeros(max(map(ord, self.chars)) + 1, dtype)
        table[[ord(c) for c in self.chars]] = np.arange(len(self), dtype=dtype)
        out = np.empty(len(text), dtype)
        piece = 1 << 22
        for start in range(0, len(text), piece):
            codes = np.frombuffer(text[start:start + piece].encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            out[start:start + len(codes)] = table[codes]
        return out

    def decode(self, ids):
        """The text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in np.ravel(ids))


def id_dtype(vocab_size):
    """The smallest integer dtype for ids below ``vocab_size``: uint8, uint16 or int32 (50 MB of text in 50 MB)."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def split(ids, valid_fraction=0.1):
    """The first part for training and the last ``valid_fraction`` for validation."""
    if not 0 <= valid_fraction < 1:
        raise DataError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    cut = len(ids) - int(len(ids) * valid_fraction)
    return ids[:cut], ids[cut:]


def bptt_batches(ids, batch_size, seq_len):
    """Inputs and targets of shape (batch_size, seq_len) for truncated BPTT, one epoch.

    As Deep Learning from Scratch 2 does it: the text is cut into ``batch_size``
    lanes that are read in parallel, and consecutive batches continue each lane
    where the last one stopped, so a stateful RNN can carry its state across.
    """
    if batch_size < 1 or seq_len < 1:
        raise DataError(f"batch_size and seq_len must be at least 1, got {batch_size} and {seq_len}")
    lane = (len(ids) - 1) // batch_size
    steps = lane // seq_len
    if steps == 0:
        raise DataError(f"text of {len(ids)} characters is too short for batch_size {batch_size} "
                        f"x seq_len {seq_len}: need at least {batch_size * seq_len + 1}")
    starts = np.arange(batch_size)[:, None] * lane + np.arange(seq_len)[None, :]
    for step in range(steps):
        pos = starts + step * seq_len
        yield ids[pos], ids[pos + 1]


def unigram_perplexity(train_ids, eval_ids, vocab_size):
    """Perplexity of ``eval_ids`` under character frequencies of ``train_ids`` (add-one smoothed).

    The baseline a language model must beat: it knows how common each character
    is and nothing about order.
    """
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return math.exp(-float(logp[eval_ids].mean()))
