"""A character RNN that learns one sentence, after the TensorFlow chapter of the RNN study posts.

One-hot characters in, a basic tanh RNN cell whose hidden size is the vocabulary
size, a fully connected layer on every step, the mean cross-entropy over the
sequence, Adam with learning rate 0.1.  Each iteration prints the loss and the
predicted string (the argmax character after each input character).

    python examples/char_rnn.py                         # " My name is Ji Myung Hwa."
    python examples/char_rnn.py --text hihello          # the classic smaller case
"""
import argparse

import numpy as np

from tinygrad_rnn import Tensor, no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam

SENTENCE = " My name is Ji Myung Hwa."


class CharRNN(nn.Module):
    """RNNCell(V, H) unrolled over the sentence, then Linear(H, V) at every step."""

    def __init__(self, vocab_size, hidden_size, rng=0):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.cell = nn.RNNCell(vocab_size, hidden_size, rng=rng)
        self.fc = nn.Linear(hidden_size, vocab_size, rng=rng)

    def forward(self, xs):
        hs, _ = nn.unroll(self.cell, xs)          # (batch, time, hidden)
        return self.fc(hs)                         # (batch, time, vocab) logits


def encode(text):
    """(chars, ids): the sorted alphabet of ``text`` and the characters' indices."""
    chars = sorted(set(text))
    return chars, np.array([chars.index(c) for c in text])


def main(argv=None, out=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default=SENTENCE, help="the sentence to learn")
    parser.add_argument("--iterations", type=int, default=20, help="Adam steps (the original: 20)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (the original: 0.1)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden size (default: vocabulary size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.text) < 2:
        parser.error("--text needs at least two characters")

    chars, ids = encode(args.text)
    V = len(chars)
    xs = np.eye(V)[ids[:-1]][None]                 # (1, T, V) one-hot inputs
    targets = ids[1:][None]                        # (1, T) the next character's index
    model = CharRNN(V, args.hidden or V, rng=args.seed)
    opt = Adam(model.parameters(), lr=args.lr)
    out(f"learning {args.text!r}: {V} characters, {xs.shape[1]} steps")

    losses, predictions = [], []
    for i in range(args.iterations):
        opt.zero_grad()
        logits = model(Tensor(xs))
        loss = F.cross_entropy(logits, targets)    # the mean over the steps
        loss.backward()
        opt.step()
        predicted = "".join(chars[j] for j in logits.data[0].argmax(axis=-1))
        losses.append(loss.item())
        predictions.append(predicted)
        out(f"{i:3d}  loss {losses[-1]:.6f}  prediction {predicted!r}")
    with no_grad():
        final = "".join(chars[j] for j in model(Tensor(xs)).data[0].argmax(axis=-1))
    out(f"after training: {final!r} (target {args.text[1:]!r})")
    return dict(losses=losses, predictions=predictions, final=final, target=args.text[1:])


if __name__ == "__main__":
    main()
