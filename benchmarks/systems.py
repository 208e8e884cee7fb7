"""The systems under test, each training the same token language model from the same weights and data.

Every system is built as ``System(weights, xs, ts, lr)`` from a weight dict
(``numpy_bptt.make_weights``, whose dtype is the system's dtype) and one batch of
token ids ``xs`` and targets ``ts`` (B, T).  ``step()`` runs one training step
(forward, backward, SGD update) and returns the loss as a float; ``grads()``
returns the last step's gradients by parameter name in the baseline's layout,
so that the systems can be checked against each other.

Systems (``key``):
  numpy           hand-written numpy BPTT (numpy_bptt.py), the baseline
  tg_rnncell      tinygrad_rnn's default path: nn.Embedding + nn.RNNCell through nn.unroll + nn.Linear,
                  F.cross_entropy, optim.SGD (the cell, tanh and the loss run as compiled compositions)
  tg_custom       a plain Python function cell tanh(x @ Wx + h @ Wh + b), undecorated (its tanh
                  is compiled, its products and sums are nodes of their own)
  tg_custom_composite
                  the same function cell with ``@tinygrad_rnn.composite``: one node per step
  tg_rnncell_expanded
                  tg_rnncell inside ``tinygrad_rnn.expanded()``: every composition node by node
  tg_rnncell_traced, tg_custom_traced
                  the two as traced programs (``tinygrad_rnn.trace(..., rewrite=True)``): the step
                  written out as numpy code once (compositions as their primitives, products of
                  every time step with a weight made as one), then run without building a graph
  tg_rnncell_traced_loop
                  tg_rnncell traced without rewrite: the compiled unroll written as a loop over t
                  calling the cell's functions (bit for bit the eager numbers)
  torch_loop      PyTorch eager, the same cell as a Python loop of torch ops
  torch_rnn       torch.nn.RNN (one fused recurrent kernel)
"""
import contextlib

import numpy as np

import numpy_bptt

LR = 0.1


def torch_module():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


class NumpyBaseline:
    key = "numpy"
    label = "hand-written numpy BPTT (baseline)"

    def __init__(self, weights, xs, ts, lr=LR):
        self.model = numpy_bptt.NumpyRNNLM(weights)
        self.xs, self.ts, self.lr = xs, ts, lr

    def step(self):
        return float(self.model.step(self.xs, self.ts, self.lr))

    def grads(self):
        return {k: v.copy() for k, v in self.model.named_grads().items()}


class _Tinygrad:
    """What the tinygrad_rnn systems share: a step, run node by node inside ``expanded()`` when ``expanded``.

    ``traced`` runs the step as a program written by ``tinygrad_rnn.trace``, made once when the
    system is built (as the weights are), so that a step's time and memory are those of the program.
    """
    expanded = False
    traced = False
    rewrite = True      # traced programs batch the input products over time (trace(..., rewrite=True))
    program = None

    def _trace(self):
        self.program = self.tg.trace(self._loss, self.xs, self.ts, rewrite=self.rewrite)

    def step(self):
        self.opt.zero_grad()
        if self.traced:
            loss = self.program(self.xs, self.ts)
        else:
            with self.tg.expanded() if self.expanded else contextlib.nullcontext():
                loss = self._loss(self.xs, self.ts)
                loss.backward()
            loss = loss.data
        self.opt.step()
        return float(loss)


class TinygradRNNCell(_Tinygrad):
    key = "tg_rnncell"
    label = "tinygrad_rnn: nn.Embedding + nn.RNNCell via nn.unroll + nn.Linear"

    def __init__(self, weights, xs, ts, lr=LR):
        import tinygrad_rnn
        from tinygrad_rnn import nn, optim
        self.tg, self.nn, self.F = tinygrad_rnn, nn, tinygrad_rnn.functional
        V, D = weights["E"].shape
        H = weights["Wh"].shape[0]
        dtype = weights["E"].dtype
        self.embed = nn.Embedding(V, D, dtype=dtype, rng=0)
        self.cell = nn.RNNCell(D, H, dtype=dtype, rng=0)
        self.fc = nn.Linear(H, V, dtype=dtype, rng=0)
        pairs = [(self.embed.W, "E"), (self.cell.Wx, "Wx"), (self.cell.Wh, "Wh"), (self.cell.b, "b"),
                 (self.fc.W, "Wo"), (self.fc.b, "bo")]
        for p, name in pairs:
            if p.data.shape != weights[name].shape:
                raise ValueError(f"{self.key}: {name} is {p.data.shape} here, {weights[name].shape} given")
            p.data[...] = weights[name]
        self.named = {name: p for p, name in pairs}
        self.opt = optim.SGD([p for p, _ in pairs], lr=lr)
        self.xs, self.ts = xs, ts

    def _loss(self, xs, ts):
        hs, _ = self.nn.unroll(self.cell, self.embed(xs))
        return self.F.cross_entropy(self.fc(hs), ts)

    def grads(self):
        return {k: p.grad.copy() for k, p in self.named.items()}


class TinygradCustomCell(_Tinygrad):
    key = "tg_custom"
    label = "tinygrad_rnn: plain-function cell tanh(x @ Wx + h @ Wh + b)"
    decorated = False

    def __init__(self, weights, xs, ts, lr=LR):
        import tinygrad_rnn
        from tinygrad_rnn import Tensor, nn, optim
        F = tinygrad_rnn.functional
        self.tg, self.nn, self.F = tinygrad_rnn, nn, F
        self.p = {k: nn.Parameter(np.array(v)) for k, v in weights.items()}
        Wx, Wh, b = self.p["Wx"], self.p["Wh"], self.p["b"]

        def cell(x, h):
            return F.tanh(x @ Wx + h @ Wh + b)

        self.cell = tinygrad_rnn.composite(cell) if self.decorated else cell
        self.Tensor = Tensor
        self.opt = optim.SGD(list(self.p.values()), lr=lr)
        self.xs, self.ts = xs, ts

    def _loss(self, xs, ts):
        p = self.p
        # a plain function has no initial_state: unroll needs the zero state given
        h0 = self.Tensor(np.zeros((xs.shape[0], p["Wh"].shape[0]), dtype=p["Wh"].dtype))
        hs, _ = self.nn.unroll(self.cell, p["E"][xs], h0)
        return self.F.cross_entropy(hs @ p["Wo"] + p["bo"], ts)

    def grads(self):
        return {k: p.grad.copy() for k, p in self.p.items()}


class TinygradCustomCellComposite(TinygradCustomCell):
    key = "tg_custom_composite"
    label = "tg_custom with @tinygrad_rnn.composite on the cell function"
    decorated = True


class TinygradRNNCellExpanded(TinygradRNNCell):
    key = "tg_rnncell_expanded"
    label = "tg_rnncell inside tinygrad_rnn.expanded() (every composition node by node)"
    expanded = True


class _Traced:
    """A tinygrad_rnn system whose step runs as a traced program, made when the system is built."""
    traced = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._trace()


class TinygradRNNCellTraced(_Traced, TinygradRNNCell):
    key = "tg_rnncell_traced"
    label = "tg_rnncell as a traced program (tinygrad_rnn.trace)"


class TinygradCustomCellTraced(_Traced, TinygradCustomCell):
    key = "tg_custom_traced"
    label = "tg_custom as a traced program (tinygrad_rnn.trace)"


class TinygradRNNCellTracedLoop(_Traced, TinygradRNNCell):
    key = "tg_rnncell_traced_loop"
    label = "tg_rnncell traced without rewrite: the compiled unroll as a loop (bit for bit)"
    rewrite = False


class TorchLoop:
    key = "torch_loop"
    label = "PyTorch eager, the same cell as a Python loop of torch ops"

    def __init__(self, weights, xs, ts, lr=LR):
        torch = self.torch = torch_module()
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
        torch = self.torch = torch_module()
        V, D = weights["E"].shape
        H = weights["Wh"].shape[0]
        dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[weights["E"].dtype]
        self.embed = torch.nn.Embedding(V, D, dtype=dtype)
        self.rnn = torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True, dtype=dtype)
        self.fc = torch.nn.Linear(H, V, dtype=dtype)
        with torch.no_grad():
            # torch keeps weights as (out, in): ours transposed.  Its second bias is held at zero
            # and frozen, so the model is exactly ours.
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
        def g(p):
            return p.grad.numpy().copy()
        return {"E": g(self.embed.weight), "Wx": g(self.rnn.weight_ih_l0).T, "Wh": g(self.rnn.weight_hh_l0).T,
                "b": g(self.rnn.bias_ih_l0), "Wo": g(self.fc.weight).T, "bo": g(self.fc.bias)}


ALL = [NumpyBaseline, TinygradRNNCell, TinygradCustomCell, TinygradCustomCellComposite, TinygradRNNCellExpanded,
       TinygradRNNCellTraced, TinygradRNNCellTracedLoop, TinygradCustomCellTraced, TorchLoop, TorchFused]
BY_KEY = {c.key: c for c in ALL}
TORCH_SYSTEMS = {TorchLoop.key, TorchFused.key}


def available(names=None):
    """The system classes to run (all, or those named), torch ones dropped when torch is missing.

    Returns ``(classes, notes)``; the numpy baseline is always included.
    """
    notes = []
    if names is None:
        classes = list(ALL)
    else:
        unknown = [n for n in names if n not in BY_KEY]
        if unknown:
            raise ValueError(f"unknown system(s) {unknown}; choose from {list(BY_KEY)}")
        classes = [c for c in ALL if c.key in set(names) | {"numpy"}]
    if torch_module() is None:
        dropped = [c.key for c in classes if c.key in TORCH_SYSTEMS]
        classes = [c for c in classes if c.key not in TORCH_SYSTEMS]
        if dropped:
            notes.append(f"torch is not installed: {', '.join(dropped)} skipped")
    return classes, notes
