"""Your own recurrent cell as a plain Python function: gradient-checked, then trained.

Any function ``cell(x, state) -> state`` made of Tensor operations is a cell:
``nn.unroll`` runs it over time and autograd differentiates the unrolled graph,
so there is no backward to write.  Here the cell is a minimal gated unit (one
gate, where the GRU has two)::

    f  = sigmoid(x @ Wf + h @ Uf + bf)          forget / update gate
    n  = tanh(x @ Wn + (f * h) @ Un + bn)       candidate state
    h' = (1 - f) * h + f * n

It is checked against central finite differences with ``gradcheck``, then
compiled with ``tinygrad_rnn.composite`` (one graph node per step, the same
numbers to the last bit) and trained on a memory task: read a sequence of
numbers and, at the end, tell whether the *first* one was positive.

    python examples/custom_cell.py

``MGU`` is the same cell as a Module, with the constructor that the command
line asks of a cell of your own:

    tinygrad-rnn gradcheck --cell examples/custom_cell.py:MGU
    tinygrad-rnn train --cell examples/custom_cell.py:MGU --max-steps 200
"""
import argparse

import numpy as np

from tinygrad_rnn import Tensor, composite, gradcheck, no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam


def make_mgu(input_size, hidden_size, rng):
    """The cell's weights (a dict of Tensors) and the cell itself, a closure over them."""
    rng = np.random.default_rng(rng)

    def weight(rows, cols):
        return Tensor(rng.standard_normal((rows, cols)) / np.sqrt(rows), requires_grad=True)
    Wf, Uf = weight(input_size, hidden_size), weight(hidden_size, hidden_size)
    bf = Tensor(np.ones(hidden_size), requires_grad=True)    # start by letting input in
    Wn, Un = weight(input_size, hidden_size), weight(hidden_size, hidden_size)
    bn = Tensor(np.zeros(hidden_size), requires_grad=True)

    # the weights are closure variables, not dict entries: a compiled composition finds them by name
    def mgu(x, h):
        f = (x @ Wf + h @ Uf + bf).sigmoid()
        n = (x @ Wn + (f * h) @ Un + bn).tanh()
        return (1 - f) * h + f * n
    return dict(Wf=Wf, Uf=Uf, bf=bf, Wn=Wn, Un=Un, bn=bn), mgu


class MGU(nn.Module):
    """The same cell as a Module: ``MGU(input_size, hidden_size, dtype=..., rng=...)``, as ``--cell`` calls it."""

    def __init__(self, input_size, hidden_size, *, dtype=np.float64, rng=None):
        rng = np.random.default_rng(rng)
        self.hidden_size = hidden_size

        def weight(rows, cols):
            return nn.Parameter(rng.standard_normal((rows, cols)) / np.sqrt(rows), dtype=dtype)
        self.Wf, self.Uf = weight(input_size, hidden_size), weight(hidden_size, hidden_size)
        self.Wn, self.Un = weight(input_size, hidden_size), weight(hidden_size, hidden_size)
        self.bf = nn.Parameter(np.ones(hidden_size), dtype=dtype)
        self.bn = nn.Parameter(np.zeros(hidden_size), dtype=dtype)

    def initial_state(self, batch):
        return Tensor(np.zeros((batch, self.hidden_size), dtype=self.Wf.dtype))

    @composite(name="mgu")
    def forward(self, x, h):
        f = (x @ self.Wf + h @ self.Uf + self.bf).sigmoid()
        n = (x @ self.Wn + (f * h) @ self.Un + self.bn).tanh()
        return (1 - f) * h + f * n


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

    def logits(xs, cell=mgu):
        h0 = Tensor(np.zeros((xs.shape[0], args.hidden)))
        _, h = nn.unroll(cell, xs, state=h0)      # many-to-one: the last state
        return head(h)

    # 1. gradient check: autograd through the unrolled cell against central differences
    xs, labels = make_task(3, 4, rng=args.seed + 1)
    x = Tensor(xs, requires_grad=True)
    gradcheck(lambda x: F.cross_entropy(logits(x), labels), x, params=everything)
    out(f"gradcheck passed: the input and all {len(everything)} weights, 4 steps, float64")

    # 2. the same cell compiled: one graph node per step, the same numbers to the last bit
    compiled_mgu = composite(mgu)       # what @composite above `def mgu` does

    def loss_and_grads(cell):
        for p in everything.values():
            p.grad = None
        loss = F.cross_entropy(logits(Tensor(xs), cell), labels)
        loss.backward()
        return loss.item(), {k: p.grad.copy() for k, p in everything.items()}
    plain_loss, plain_grads = loss_and_grads(mgu)
    compiled_loss, compiled_grads = loss_and_grads(compiled_mgu)
    same_bits = plain_loss == compiled_loss and all(np.array_equal(plain_grads[k], compiled_grads[k])
                                                    for k in plain_grads)
    if not same_bits:
        raise AssertionError("the compiled cell should give the plain cell's loss and gradients")
    out("compiled with @composite: the same loss and gradients, bit for bit")

    # 3. training, with the compiled cell
    xs, labels = make_task(args.train, args.length, rng=args.seed + 2)
    test_xs, test_labels = make_task(256, args.length, rng=args.seed + 3)
    opt = Adam(list(everything.values()), lr=args.lr)
    losses = []
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(logits(Tensor(xs), compiled_mgu), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if args.log_every and (step % args.log_every == 0 or step == args.steps):
            out(f"step {step:4d}  loss {losses[-1]:.4f}")
    with no_grad():
        accuracy = float(np.mean(logits(Tensor(test_xs), compiled_mgu).data.argmax(axis=-1) == test_labels))
    out(f"test accuracy, remembering the sign of the first of {args.length} numbers: {accuracy:.3f}")
    return dict(losses=losses, accuracy=accuracy, same_bits=same_bits)


if __name__ == "__main__":
    main()
