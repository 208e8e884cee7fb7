"""tinygrad_rnn: a small autograd framework on numpy for recurrent networks.

Layers, each importing only those below it:
  tensor      the engine (Tensor, graph, backward)
  tracing     trace: a training step written out as numpy code, and run as such; tracing.vjp
              writes a composition's forward and backward
  composite   compiled compositions: a function of Tensors run as one node (forward and backward
              written from the composition itself)
  functional  activations and losses as compositions of Tensor operations, compiled
  checking    gradcheck, gradgradcheck, numerical_grad, compare_grads
  stepcheck   compare_bptt: the time step where a hand-derived BPTT goes wrong (on checking)
  nn          modules, recurrent cells, unrolling
  optim       SGD, Adam, gradient clipping
  data, training, blas   the character model and its training loop (imported on use)
  viz, cli    pictures and the command line (imported on use)
"""
from .tensor import Tensor, concat, stack, where, maximum, minimum, no_grad, is_grad_enabled, grad
from .composites import composite, expanded
from . import functional
from .checking import (GradcheckError, GradReport, numerical_grad, gradcheck, gradcheck_report, compare_grads,
                       gradgradcheck)
from .stepcheck import BPTTReport, StepRecorder, compare_bptt
from .tracing import Program, TraceError, trace
from . import nn, optim

__version__ = "0.1.0"

__all__ = ["Tensor", "concat", "stack", "where", "no_grad", "is_grad_enabled", "functional",
           "nn", "optim", "maximum", "minimum",
           "GradcheckError", "GradReport", "numerical_grad", "gradcheck", "gradcheck_report",
           "compare_grads", "grad", "gradgradcheck", "compare_bptt", "StepRecorder", "BPTTReport", "trace", "Program",
           "TraceError", "composite", "expanded"]
