"""A linear RNN that learns to count the ones in a sequence of zeros and ones.

    S_k = S_{k-1} * w_rec + X_k * w_x,   S_0 = 0,   y = S_K,   L = mean((t - y)^2)

Two weights; the exact solution is w_x = w_rec = 1.  The example compares
autograd's gradients with the hand-derived ones of
``tinygrad_rnn.reference.count_ones`` (weights and every state), shows the
original tutorial's per-state gradients off by a factor N, then trains.

The loss is a polynomial of degree K in w_rec, so its gradient spans many
orders of magnitude across the plane (w_rec = 2 gives 2^10).  That is why the
original trains with Rprop, which steps by the gradient's sign only, and so
does this example.

    python examples/count_ones.py
"""
import argparse

import numpy as np

from tinygrad_rnn import Tensor, compare_grads, no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn.reference import count_ones


def forward(X, w_x, w_rec, keep_states=False):
    """The unrolled recurrence as a graph; returns (y, states) with the states' grads retained."""
    S = Tensor(np.zeros(X.shape[0]))
    states = []
    for k in range(X.shape[1]):
        S = S * w_rec + Tensor(X[:, k]) * w_x
        if keep_states:
            states.append(S.retain_grad())
    return S, states


class Rprop:
    """Resilient backpropagation: a step per weight that grows while the gradient keeps its sign
    and shrinks when it flips; only the sign of the gradient is used."""

    def __init__(self, params, step=0.001, grow=1.2, shrink=0.5):
        self.params, self.grow, self.shrink = list(params), grow, shrink
        self.steps = [np.full(p.shape, step) for p in self.params]
        self.previous = [np.zeros(p.shape) for p in self.params]

    def step(self):
        for p, size, prev in zip(self.params, self.steps, self.previous):
            same = np.sign(p.grad) * np.sign(prev)
            size *= np.where(same > 0, self.grow, np.where(same < 0, self.shrink, 1.0))
            p.data -= np.sign(p.grad) * size
            prev[...] = p.grad

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def main(argv=None, out=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1, help="data seed (the original: 1)")
    parser.add_argument("--steps", type=int, default=500, help="Rprop updates")
    parser.add_argument("--init", type=float, nargs=2, default=[-1.5, 2.0], metavar=("W_X", "W_REC"),
                        help="starting weights (the original: -1.5 2)")
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args(argv)

    X, t = count_ones.make_data(args.samples, args.length, seed=args.seed)
    N = X.shape[0]
    w_x = Tensor(args.init[0], requires_grad=True, name="w_x")
    w_rec = Tensor(args.init[1], requires_grad=True, name="w_rec")
    params = {"w_x": w_x, "w_rec": w_rec}

    # 1. weight gradients: autograd against the hand derivation
    _, hand_wx, hand_wrec = count_ones.loss_and_grads(X, t, w_x.item(), w_rec.item())
    report = compare_grads(lambda: F.mse_loss(forward(X, w_x, w_rec)[0], t), params,
                           {"w_x": np.array(hand_wx), "w_rec": np.array(hand_wrec)})
    out(f"{N} sequences of {args.length}; weights w_x={w_x.item()}, w_rec={w_rec.item()}")
    out("weight gradients, autograd against the hand derivation:")
    out(str(report))

    # 2. state gradients: dL/dS_k of the mean loss, and the original's per-sample version
    y, states = forward(X, w_x, w_rec, keep_states=True)
    F.mse_loss(y, t).backward()
    auto_dS = np.stack([s.grad for s in states], axis=1)
    S = count_ones.forward_states(X, w_x.item(), w_rec.item())
    hand_dS = count_ones.backward(X, t, S, w_rec.item())[2][:, 1:]
    original = count_ones.per_sample_state_grads(X, t, w_x.item(), w_rec.item())[:, 1:]
    state_diff = float(np.abs(auto_dS - hand_dS).max())
    nonzero = auto_dS != 0
    ratio = float(np.median(original[nonzero] / auto_dS[nonzero]))
    out(f"state gradients dL/dS_k: max |autograd - hand| = {state_diff:.3g}; the original's "
        f"per-sample gradients are {ratio:.6g} times autograd's (N = {N})")
    w_x.grad = w_rec.grad = None

    # 3. training
    opt = Rprop([w_x, w_rec])
    losses = []
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = F.mse_loss(forward(X, w_x, w_rec)[0], t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if args.log_every and (step % args.log_every == 0 or step == args.steps):
            out(f"  step {step:4d}  loss {losses[-1]:.6g}  w_x {w_x.item():.6f}  w_rec {w_rec.item():.6f}")
    test = np.array([[1, 0, 1, 1, 0, 0, 1, 1, 1, 0]], dtype=float)
    with no_grad():
        counted = forward(test, w_x, w_rec)[0].item()
    out(f"the sequence {test[0].astype(int).tolist()} holds {int(test.sum())} ones; the RNN says {counted:.4f}")
    return dict(report=report, state_diff=state_diff, ratio=ratio, losses=losses,
                w_x=w_x.item(), w_rec=w_rec.item(), counted=counted)


if __name__ == "__main__":
    main()
