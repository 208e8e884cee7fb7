"""The systems under test, each training the same token language model from the same weights.

Every system is built from a weight dict (``baseline_numpy.make_weights``) and
one batch ``(xs, ts)``; ``step()`` runs one training step (forward, backward,
SGD update) on that batch and returns the loss as a float; ``grads()`` returns
the gradients of the last step by parameter name, in the baseline's layout, so
the systems can be checked against each other.
"""
import numpy as np

import baseline_numpy

LR = 0.01


def _torch():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


class NumpyBaseline:
    key = "numpy"
    label = "hand-written numpy BPTT"

    def __init__(self, weights, xs, ts, lr=LR):
        self.model = baseline_numpy.NumpyRnnlm(weights)
        self.xs, self.ts, self.lr = xs, ts, lr

    def step(self):
        return float(self.model.step(self.xs, self.ts, self.lr))

    def grads(self):
        return {k: v.copy() for k, v in self.model.named_grads().items()}


class TinygradRNNCell:
    key = "tg_rnncell"
    label = "tinygrad_rnn: nn.Embedding + nn.RNNCell via nn.unroll + nn.Linear"

    def __init__(self, weights, xs, ts, lr=LR):
        from tinygrad_rnn import nn, optim
        import tinygrad_rnn.functional as F
        self.nn, self.F = nn, F
        V, D = weights["E"].shape
        H = weights["Wh"].shape[0]
        dtype = weights["E"].dtype
        self.embed = nn.Embedding(V, D, dtype=dtype, rng=0)
        self.cell = nn.RNNCell(D, H, dtype=dtype, rng=0)
        self.fc = nn.Linear(H, V, dtype=dtype, rng=0)
        pairs = [(self.embed.W, "E"), (self.cell.Wx, "Wx"), (self.cell.Wh, "Wh"), (self.cell.b, "b"),
                 (self.fc.W, "Wo"), (self.fc.b, "bo")]
        for p, name in pairs:
            p.data[...] = weights[name]
        self.named = {name: p for p, name in pairs}
        self.opt = optim.SGD([p for p, _ in pairs], lr=lr)
        self.xs, self.ts = xs, ts

    def step(self):
        self.opt.zero_grad()
        hs, _ = self.nn.unroll(self.cell, self.embed(self.xs))
        loss = self.F.cross_entropy(self.fc(hs), self.ts)
        loss.backward()
        self.opt.step()
        return float(loss.data)

    def grads(self):
        return {k: p.grad.copy() for k, p in self.named.items()}


class TinygradCustomCell:
    key = "tg_custom"
    label = "tinygrad_rnn: plain-function cell tanh(x @ Wx + h @ Wh + b), raw Tensors"

    def __init__(self, weights, xs, ts, lr=LR):
        from tinygrad_rnn import Tensor, nn, optim
        import tinygrad_rnn.functional as F
        self.nn, self.F = nn, F
        self.p = {k: nn.Parameter(v) for k, v in weights.items()}
        Wx, Wh, b = self.p["Wx"], self.p["Wh"], self.p["b"]

        def cell(x, h):
            return F.tanh(x @ Wx + h @ Wh + b)

        self.cell = cell
        self.h0 = Tensor(np.zeros((xs.shape[0], Wh.shape[0]), dtype=Wh.dtype))
        self.opt = optim.SGD(list(self.p.values()), lr=lr)
        self.xs, self.ts = xs, ts

    def step(self):
        p = self.p
        self.opt.zero_grad()
        hs, _ = self.nn.unroll(self.cell, p["E"][self.xs], self.h0)
        loss = self.F.cross_entropy(hs @ p["Wo"] + p["bo"], self.ts)
        loss.backward()
        self.opt.step()
        return float(loss.data)

    def grads(self):
        return {k: p.grad.copy() for k, p in self.p.items()}


class TorchLoop:
    key = "torch_loop"
    label = "PyTorch eager, the same cell as a Python loop of torch ops"

    def __init__(self, weights, xs, ts, lr=LR):
        torch = self.torch = _torch()
        self.p = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
        self.xs = torch.from_numpy(xs)
        self.ts = torch.from_numpy(ts.reshape(-1))
        self.opt = torch.optim.SGD(list(self.p.values()), lr=lr)

    def step(self):
        torch, p = self.torch, self.p
        self.opt.zero_grad()
        x = p["E"][self.xs]
        B, T, _ = x.shape
        h = torch.zeros(B, p["Wh"].shape[0], dtype=x.dtype)
        hs = []
        for t in range(T):
            h = torch.tanh(x[:, t] @ p["Wx"] + h @ p["Wh"] + p["b"])
            hs.append(h)
        logits = torch.stack(hs, 1) @ p["Wo"] + p["bo"]
        loss = torch.nn.functional.cross_entropy(logits.reshape(B * T, -1), self.ts)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def grads(self):
        return {k: v.grad.numpy().copy() for k, v in self.p.items()}


class TorchFused:
    key = "torch_rnn"
    label = "torch.nn.Embedding + torch.nn.RNN (fused) + torch.nn.Linear"

    def __init__(self, weights, xs, ts, lr=LR):
        torch = self.torch = _torch()
        V, D = weights["E"].shape
        H = weights["Wh"].shape[0]
        dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[weights["E"].dtype]
        self.embed = torch.nn.Embedding(V, D, dtype=dtype)
        self.rnn = torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True, dtype=dtype)
        self.fc = torch.nn.Linear(H, V, dtype=dtype)
        with torch.no_grad():
            # torch keeps weights as (out, in): ours transposed; its second bias stays at zero, frozen
            self.embed.weight.copy_(torch.from_numpy(weights["E"]))
            self.rnn.weight_ih_l0.copy_(torch.from_numpy(weights["Wx"].T.copy()))
            self.rnn.weight_hh_l0.copy_(torch.from_numpy(weights["Wh"].T.copy()))
            self.rnn.bias_ih_l0.copy_(torch.from_numpy(weights["b"]))
            self.rnn.bias_hh_l0.zero_()
            self.fc.weight.copy_(torch.from_numpy(weights["Wo"].T.copy()))
            self.fc.bias.copy_(torch.from_numpy(weights["bo"]))
        self.rnn.bias_hh_l0.requires_grad_(False)
        params = [self.embed.weight, self.rnn.weight_ih_l0, self.rnn.weight_hh_l0, self.rnn.bias_ih_l0,
                  self.fc.weight, self.fc.bias]
        self.opt = torch.optim.SGD(params, lr=lr)
        self.xs = torch.from_numpy(xs)
        self.ts = torch.from_numpy(ts.reshape(-1))

    def step(self):
        self.opt.zero_grad()
        hs, _ = self.rnn(self.embed(self.xs))
        logits = self.fc(hs)
        loss = self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.ts)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def grads(self):
        g = lambda p: p.grad.numpy().copy()
        return {"E": g(self.embed.weight), "Wx": g(self.rnn.weight_ih_l0).T, "Wh": g(self.rnn.weight_hh_l0).T,
                "b": g(self.rnn.bias_ih_l0), "Wo": g(self.fc.weight).T, "bo": g(self.fc.bias)}


ALL = [NumpyBaseline, TinygradRNNCell, TinygradCustomCell, TorchLoop, TorchFused]
TORCH_SYSTEMS = {TorchLoop.key, TorchFused.key}
