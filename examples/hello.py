"""The "hello" RNN: read "hell", predict "ello", one character ahead.

The many-to-many tanh RNN of the Korean RNN study posts, rebuilt from Tensor
operations:

    h_t = tanh(x_t @ Wxh + h_{t-1} @ Whh + Bh),  z_t = h_t @ Wy + By,  E = sum_t CE(softmax(z_t), y_t)

It reproduces the post's loss at seed 230912, shows autograd equal to the
hand-derived BPTT of ``tinygrad_rnn.reference.hello_rnn``, trains with SGD until
the predictions read "ello" (hidden size 3, then 6), and shows the comparison
report catching the original post's two mistakes.

    python examples/hello.py                 # the textbook settings
    python examples/hello.py --steps 300     # quicker
"""
import argparse

import numpy as np

from tinygrad_rnn import Tensor, compare_grads, no_grad
from tinygrad_rnn import functional as F
from tinygrad_rnn.optim import SGD
from tinygrad_rnn.reference import hello_rnn

SEED = 230912
TEXTBOOK_LOSS = {3: 12.062061261168791, 6: 15.950983723925223}


def to_params(weights):
    """numpy weights (the reference's dict) -> Tensors that require grad, same names."""
    return {k: Tensor(v, requires_grad=True, name=k) for k, v in weights.items()}


def hello_loss(params, X, Y, scores=None):
    """The summed cross-entropy over the steps, as a graph: autograd does the BPTT.

    If ``scores`` is a list, each step's logits (numpy) are appended to it.
    """
    h = Tensor(np.zeros((1, params["Whh"].shape[0])))
    total = Tensor(0.0)
    for t in range(X.shape[0]):
        h = (Tensor(X[t:t + 1]) @ params["Wxh"] + h @ params["Whh"] + params["Bh"]).tanh()
        z = h @ params["Wy"] + params["By"]
        if scores is not None:
            scores.append(z.data[0])
        total = total + F.cross_entropy(z, Y[t:t + 1], reduction="sum")
    return total


@no_grad()
def predict(params, X):
    """The argmax character at every step."""
    h = Tensor(np.zeros((1, params["Whh"].shape[0])))
    out = []
    for t in range(X.shape[0]):
        h = (Tensor(X[t:t + 1]) @ params["Wxh"] + h @ params["Whh"] + params["Bh"]).tanh()
        out.append((h @ params["Wy"] + params["By"]).data[0])
    return hello_rnn.decode(np.array(out))


def numpy_weights(params):
    return {k: p.data.copy() for k, p in params.items()}


def train(hidden, steps, lr, log_every, out=print):
    """SGD from the textbook initialisation; returns (params, losses, first_ello).

    ``losses[i]`` is the loss before update i and ``losses[steps]`` the loss after
    the last one; ``first_ello`` is the number of updates after which the
    predictions first read "ello" (None if they never do).
    """
    X, Y = hello_rnn.hello_data()
    params = to_params(hello_rnn.init_params(hidden, seed=SEED))
    opt = SGD(list(params.values()), lr=lr)
    losses, first_ello = [], None
    for step in range(steps):
        scores = []
        opt.zero_grad()
        loss = hello_loss(params, X, Y, scores)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if first_ello is None and hello_rnn.decode(np.array(scores)) == "ello":
            first_ello = step                      # the scores were computed before this update
        if log_every and (step + 1) % log_every == 0:
            out(f"  step {step + 1:5d}  loss {losses[-1]:.8f}  predicts {predict(params, X)!r}")
    with no_grad():
        losses.append(hello_loss(params, X, Y).item())
    if first_ello is None and predict(params, X) == "ello":
        first_ello = steps
    return params, losses, first_ello


def main(argv=None, out=print):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="SGD updates (textbook: 2000)")
    parser.add_argument("--lr", type=float, default=0.005, help="learning rate (textbook: 0.005)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[3, 6], help="hidden sizes to train")
    parser.add_argument("--log-every", type=int, default=500, help="print the loss every N steps")
    parser.add_argument("--no-mistakes", action="store_true", help="skip the original's mistakes")
    args = parser.parse_args(argv)
    X, Y = hello_rnn.hello_data()
    results = {}

    for hidden in args.hidden:
        out(f"== hidden size {hidden} ==")
        weights = hello_rnn.init_params(hidden, seed=SEED)
        params = to_params(weights)
        loss = hello_loss(params, X, Y).item()
        line = f"loss at seed {SEED}: {loss!r}"
        if hidden in TEXTBOOK_LOSS:
            line += f"  (textbook {TEXTBOOK_LOSS[hidden]!r})"
        out(line)

        _, hand = hello_rnn.loss_and_grads(weights, X, Y)
        report = compare_grads(lambda params=params: hello_loss(params, X, Y), params, hand)
        out("autograd against the hand-derived BPTT:")
        out(str(report))

        out(f"SGD, lr {args.lr}, {args.steps} updates:")
        trained, losses, first_ello = train(hidden, args.steps, args.lr, args.log_every, out=out)
        prediction = predict(trained, X)
        if first_ello is not None:
            out(f"the predictions read 'ello' after {first_ello} updates")
        out(f"loss after {args.steps} updates {losses[-1]:.11f}, predictions {prediction!r}")
        results[hidden] = dict(initial_loss=loss, report=report, losses=losses, prediction=prediction,
                               first_ello=first_ello, params=numpy_weights(trained))

    if not args.no_mistakes:
        out("== the original post's two mistakes, caught by compare_grads (hidden size 3) ==")
        weights = hello_rnn.init_params(3, seed=SEED)
        params = to_params(weights)
        mistakes = {}
        for name, fn, what in [
                ("overwritten output gradients", hello_rnn.grads_overwritten_output,
                 "dWy and dBy assigned at each step instead of summed: only the first step's term survives"),
                ("single target row", hello_rnn.grads_single_target_typo,
                 "target[0] passed where targets[0] belongs: the gradient of another function")]:
            report = compare_grads(lambda: hello_loss(params, X, Y), params, fn(weights, X, Y))
            _, wrong_losses = hello_rnn.sgd_train(weights, X, Y, lr=args.lr, steps=args.steps, grad_fn=fn)
            out(f"-- {name}: {what}")
            out(str(report))
            out(f"   descending it for {args.steps} steps ends at loss {wrong_losses[-1]:.4f}")
            mistakes[name] = dict(report=report, final_loss=wrong_losses[-1])
        results["mistakes"] = mistakes
    return results


if __name__ == "__main__":
    main()
