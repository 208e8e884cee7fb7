"""Traced steps: run a function once, and write its forward and backward out as straight numpy code.

``trace(fn, *example_inputs)`` calls ``fn`` eagerly while the engine reports
every operation to a recorder, runs the backward pass the engine would run for
``fn``'s first output, and writes both as one Python function of numpy calls:
one line per operation, named after the tensors (``h_3``, ``dh_3``, ``dWh``).
Calling the returned ``Program`` with new inputs of the same shapes and dtypes
runs that function: no Tensor and no graph node is made, and the results are
the eager engine's to the last bit (each line is the numpy call the engine
makes, in the engine's order; while the program is written, every forward
line's value and the final gradients are checked against the eager run).

What the program may assume, and how it is held to it:

* shapes and dtypes of inputs and parameters: checked on every call; other
  ones trace again (one program per signature is kept);
* branches a composition takes on values (``tensor.decide``): each is a guard
  in the code; when one fails, that call runs eagerly instead;
* values computed from data (signs, masks, shifts): recomputed in the code
  (``tensor.derived``), never frozen;
* numpy arrays and numbers ``fn`` reads from outside are constants, copied
  when the program is written;
* everything else ``fn`` reads must be an input or a parameter.  A tensor made
  before tracing that is neither is refused (its value would be frozen), and
  turning a traced tensor into a Python value (``item()``, ``float()``,
  ``bool()``, ``numpy()``) raises, because code that branches on it would not
  be replayed.

Before a program is handed out it is also run on other values of every input
(floats, integers within their range, booleans) next to ``fn`` run eagerly on
them.  While tracing, ``.data`` read outside the package and random draws are
refused, and what ``fn`` reads from outside (the closure cells and globals of
``fn`` and of the user's functions, methods and properties it reaches, the attributes of the
modules and objects it reaches) is noted: a later call where it changed traces
again.  A value that ``fn`` reads and changes on every call is refused.

Parameters (tensors that require grad and were made before tracing) are read
afresh on every call, so an optimiser's updates are seen (a Parameter
replaced on a module makes the next call trace again); their gradients are accumulated
into ``.grad`` exactly as ``backward()`` does, an input made by the caller's
graph hands its gradient on into it, and under ``no_grad()`` a call computes
values only.

The package, one idea per file: ``program`` (``trace``, ``Program``, its
guards), ``watch``, ``probes`` and ``objects`` (what ``fn`` reads from outside,
the checks of it, and where the user's state can be), ``recorder`` (the engine's
reports, as named events), ``writer`` with ``forward`` and ``backward`` (the
lines), ``lines`` and ``passes`` (the lines as records, and what is done to
them before they are rendered), ``batch`` (products batched over time), ``run``
(one trace), ``verify`` (the checks against the eager engine), and for compiled
compositions ``composite_calls`` (one call each) and ``unroll_loop`` (an
unrolled sequence as a loop over time).
"""
from .errors import GuardFailed, TraceError
from .program import Program, trace

__all__ = ["trace", "Program", "TraceError", "GuardFailed"]

# the package's inner parts that other modules of tinygrad_rnn (and tests) reach through this name
from .backward import _ScatterCode  # noqa: E402,F401
from .recorder import _Recorder, _Recording  # noqa: E402,F401
from .verify import _close, _same  # noqa: E402,F401
from .probes import probe as _probe, still_holds as _still_holds  # noqa: E402,F401
from .watch import _SLOT_DATA, _Watch  # noqa: E402,F401
from .writer import _Writer  # noqa: E402,F401
