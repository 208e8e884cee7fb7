"""A many-to-one LSTM that reads five numbers and predicts the next, after the Keras chapter.

Window j is ``[(j + i) / 100 for i in range(5)]`` and its target ``(j + 5) / 100``,
for j = 0..99; 80 windows train, 20 test (a seeded shuffle).  An LSTM with one
hidden unit reads each window one number at a time; its last hidden state goes
through a 1 -> 1 linear layer (the hidden state of an LSTM is bounded by
tanh to (-1, 1), and the targets reach 1.04).  MSE loss, Adam, full batch.

With matplotlib installed and ``--out plot.png``, it draws the predicted
against the true values of the test windows, and the loss curve.

    python examples/lstm_sequence.py --out lstm.png
"""
import argparse

import numpy as np

from tinygrad_rnn import Tensor, no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.optim import Adam


def make_windows(count=100, width=5):
    """(xs, ys): xs (count, width, 1) the windows, ys (count, 1) the number after each."""
    j = np.arange(count)[:, None]
    xs = (j + np.arange(width)[None, :]) / 100.0
    return xs[:, :, None], (j + width) / 100.0


class ManyToOne(nn.Module):
    """LSTMCell(1, H) over the window, Linear(H, 1) on the last hidden state."""

    def __init__(self, hidden_size=1, rng=0):
        super().__init__()
        rng = np.random.default_rng(rng)
        self.cell = nn.LSTMCell(1, hidden_size, rng=rng)
        self.head = nn.Linear(hidden_size, 1, rng=rng)

    def forward(self, xs):
        _, (h, _) = nn.unroll(self.cell, xs)      # many-to-one: only the last state is used
        return self.head(h)


def plot(path, true, predicted, losses):
    """Predicted against true (scatter) and the loss curve, side by side, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.scatter(true, predicted, s=12)
    lo, hi = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    left.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    left.set_xlabel("true")
    left.set_ylabel("predicted")
    left.set_title("test windows")
    right.semilogy(losses)
    right.set_xlabel("epoch")
    right.set_ylabel("training MSE")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None, out=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1000, help="full-batch Adam steps (the original: 1000)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=1, help="LSTM hidden units (the original: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the plot to this PNG (needs matplotlib)")
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args(argv)

    xs, ys = make_windows()
    order = np.random.default_rng(args.seed).permutation(len(xs))
    train, test = order[:80], order[80:]
    model = ManyToOne(args.hidden, rng=args.seed)
    opt = Adam(model.parameters(), lr=args.lr)
    x_train, y_train = Tensor(xs[train]), ys[train]
    losses = []
    for epoch in range(1, args.epochs + 1):
        opt.zero_grad()
        loss = F.mse_loss(model(x_train), y_train)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if args.log_every and (epoch % args.log_every == 0 or epoch == args.epochs):
            out(f"epoch {epoch:5d}  train MSE {losses[-1]:.3e}")
    with no_grad():
        predicted = model(Tensor(xs[test])).data[:, 0]
    true = ys[test, 0]
    test_mse = float(np.mean((predicted - true) ** 2))
    out(f"test MSE {test_mse:.3e}")
    for i in np.argsort(true)[:: max(1, len(true) // 5)]:
        out(f"  window starting {xs[test][i, 0, 0]:.2f}: true {true[i]:.4f}  predicted {predicted[i]:.4f}")

    plotted = None
    if args.out:
        try:
            import matplotlib  # noqa: F401  (only to learn whether it is installed)
        except ImportError:
            out("matplotlib is not installed: no plot (pip install matplotlib)")
        else:
            plot(args.out, true, predicted, losses)
            plotted = args.out
            out(f"plot written to {args.out}")
    return dict(losses=losses, test_mse=test_mse, true=true, predicted=predicted, plot=plotted)


if __name__ == "__main__":
    main()
