"""tinygrad_rnn: a small autograd framework on numpy for recurrent networks.

Layers, each importing only those below it:
  tensor      the engine (Tensor, graph, backward)
  functional  activations and losses as compositions of Tensor operations
  fused       opt-in one-node tanh, sigmoid and cross-entropy (speed; checked against functional)
  checking    gradcheck, numerical_grad, compare_grads
  tracing     trace: a training step written out as numpy code, and run as such
  nn          modules, recurrent cells, unrolling
  optim       SGD, Adam, gradient clipping
  data, training, blas   the character model and its training loop (imported on use)
  viz, cli    pictures and the command line (imported on use)
"""
from .tensor import Tensor, concat, stack, where, maximum, minimum, no_grad, is_grad_enabled
from . import functional, fused
from .checking import GradcheckError, GradReport, numerical_grad, gradcheck, gradcheck_report, compare_grads
from .tracing import Program, TraceError, trace
from . import nn, optim

__version__ = "0.1.0"

__all__ = ["Tensor", "concat", "stack", "where", "no_grad", "is_grad_enabled", "functional", "fused",
           "nn", "optim", "maximum", "minimum",
           "GradcheckError", "GradReport", "numerical_grad", "gradcheck", "gradcheck_report",
           "compare_grads", "trace", "Program", "TraceError"]
