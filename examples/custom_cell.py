"""Your own recurrent cell as a plain Python function: gradient-checked, then trained.

Any function ``cell(x, state) -> state`` made of Tensor operations is a cell:
``nn.unroll`` runs it over time and autograd differentiates the unrolled graph,
so there is no backward to write.  Here the cell is a minimal gated unit (one
gate, where the GRU has two)::

    f  = sigmoid(x @ Wf + h @ Uf + bf)          forget / update gate
    n  = tanh(x @ Wn + (f * h) @ Un + bn)       candidate state
    h' = (1 - f) * h + f * n

It is checked against central finite differences with ``gradcheck``, then
trained on a memory task: read a sequence of numbers and, at the end, tell
whether the *first* one was positive.

    python examples/custom_cell.py
"""
import argparse

import numpy as np

from tinygrad_rnn import Tensor, gradcheck, no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam


def make_mgu(input_size, hidden_size, rng):
    """The cell's weights (a dict of Tensors) and the cell itself, a closure over them."""
    rng = np.random.default_rng(rng)

    def weight(rows, cols):
        return Tensor(rng.standard_normal((rows, cols)) / np.sqrt(rows), requires_grad=True)
    params = {"Wf": weight(input_size, hidden_size), "Uf": weight(hidden_size, hidden_size),
              "bf": Tensor(np.ones(hidden_size), requires_grad=True),   # start by letting input in
              "Wn": weight(input_size, hidden_size), "Un": weight(hidden_size, hidden_size),
              "bn": Tensor(np.zeros(hidden_size), requires_grad=True)}

    def mgu(x, h):
        f = (x @ params["Wf"] + h @ params["Uf"] + params["bf"]).sigmoid()
        n = (x @ params["Wn"] + (f * h) @ params["Un"] + params["bn"]).tanh()
        return (1 - f) * h + f * n
    return params, mgu


def make_task(count, length, rng):
    """xs (count, length, 1) standard normal; label 1 where the first number is positive."""
    xs = np.random.default_rng(rng).standard_normal((count, length, 1))
    return xs, (xs[:, 0, 0] > 0).astype(np.int64)


def main(argv=None, out=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--length", type=int, default=10, help="sequence length to remember across")
    parser.add_argument("--train", type=int, default=256, help="training sequences")
    parser.add_argument("--steps", type=int, default=300, help="full-batch Adam steps")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)

    params, mgu = make_mgu(1, args.hidden, rng=args.seed)
    head = nn.Linear(args.hidden, 2, rng=args.seed)
    everything = dict(params, **{f"head.{k}": p for k, p in dict(head.named_parameters()).items()})

    def logits(xs):
        h0 = Tensor(np.zeros((xs.shape[0], args.hidden)))
        _, h = nn.unroll(mgu, xs, state=h0)       # many-to-one: the last state
        return head(h)

    # 1. gradient check: autograd through the unrolled cell against central differences
    xs, labels = make_task(3, 4, rng=args.seed + 1)
    x = Tensor(xs, requires_grad=True)
    gradcheck(lambda x: F.cross_entropy(logits(x), labels), x, params=everything)
    out(f"gradcheck passed: the input and all {len(everything)} weights, 4 steps, float64")

    # 2. training
    xs, labels = make_task(args.train, args.length, rng=args.seed + 2)
    test_xs, test_labels = make_task(256, args.length, rng=args.seed + 3)
    opt = Adam(list(everything.values()), lr=args.lr)
    losses = []
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(logits(Tensor(xs)), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if args.log_every and (step % args.log_every == 0 or step == args.steps):
            out(f"step {step:4d}  loss {losses[-1]:.4f}")
    with no_grad():
        accuracy = float(np.mean(logits(Tensor(test_xs)).data.argmax(axis=-1) == test_labels))
    out(f"test accuracy, remembering the sign of the first of {args.length} numbers: {accuracy:.3f}")
    return dict(losses=losses, accuracy=accuracy)


if __name__ == "__main__":
    main()
