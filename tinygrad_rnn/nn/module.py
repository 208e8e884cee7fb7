"""Module and Parameter: finding parameters, zeroing gradients, saving and loading them."""
import zipfile

import numpy as np

from .. import composites
from ..tensor import Tensor, _writable

__all__ = ["Parameter", "Module", "StateDictError"]


class Parameter(Tensor):
    """A Tensor that a Module trains: ``requires_grad=True`` and always a float array."""
    __slots__ = ()

    def __init__(self, data, dtype=None):
        data = data.data if isinstance(data, Tensor) else data
        array = np.array(data, dtype=dtype)
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        super().__init__(array, requires_grad=True)


class StateDictError(KeyError, ValueError):
    """A state dict or checkpoint that does not fit the module (missing, extra or mis-shaped key)."""

    def __str__(self):
        """The message alone (a KeyError would print it quoted)."""
        return str(self.args[0]) if self.args else ""


class Module:
    """Base class: attributes that are Parameters or Modules (also in lists, tuples and dicts) are found."""

    def __call__(self, *args, **kwargs):
        """``module(...)`` is ``module.forward(...)``."""
        return self.forward(*args, **kwargs)

    def __setattr__(self, name, value):
        """Set an attribute; a public one also tells compiled compositions to check themselves again."""
        # a compiled composition may have read this attribute (a parameter, ``nonlinearity``): it checks
        # itself again before its next run
        if not name.startswith("_"):
            composites.attribute_set()
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        """The computation; every subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __repr__(self):
        """The class name and every parameter's dotted name, shape and dtype, one per line."""
        rows = [f"  {name}: {p.shape} {p.dtype}" for name, p in self.named_parameters()]
        return f"{type(self).__name__}(" + ("\n" + "\n".join(rows) + "\n" if rows else "") + ")"

    def named_parameters(self, prefix=""):
        """Pairs ``(dotted name, Parameter)`` in attribute order; a shared Parameter appears once."""
        seen = set()
        for name, p in _walk(self, prefix.rstrip("."), set()):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self):
        """The Parameters of this module and its submodules, as a list."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        """Forget the gradients of every parameter."""
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """``{dotted name: copy of the parameter's array}``."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters, in place, after checking every key, shape and dtype."""
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        extra = [k for k in state if k not in params]
        if missing or extra:
            parts = []
            if missing:
                parts.append("missing keys " + ", ".join(
                    f"{k!r} (shape {params[k].shape}, {params[k].dtype})" for k in missing))
            if extra:
                parts.append("unexpected keys " + ", ".join(
                    f"{k!r} (shape {_shape(state[k])})" for k in extra))
            raise StateDictError(f"load_state_dict into {type(self).__name__}: {'; '.join(parts)} "
                                 f"(the module has {list(params)})")
        arrays = {}
        for name, p in params.items():
            value = np.asarray(state[name].data if isinstance(state[name], Tensor) else state[name])
            if value.shape != p.shape:
                raise StateDictError(f"load_state_dict: key {name!r} has shape {value.shape} ({value.dtype}), "
                                     f"but the parameter has shape {p.shape} ({p.dtype})")
            if value.dtype.kind not in "fiu":
                raise StateDictError(f"load_state_dict: key {name!r} has dtype {value.dtype}, "
                                     f"not a number type (the parameter is {p.dtype})")
            arrays[name] = value
        for name, value in arrays.items():   # only after every key has passed
            _writable(params[name])[...] = value
        return self

    def save(self, path):
        """Write the parameters to an ``.npz`` file at exactly ``path``."""
        # written member by member as np.savez does, but without passing names as keyword arguments:
        # a parameter called "file" or "allow_pickle" would collide with np.savez's own arguments
        with zipfile.ZipFile(path, "w") as archive:
            for name, array in self.state_dict().items():
                with archive.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)

    def load(self, path):
        """Fill this module's parameters from an ``.npz`` written by ``save``; returns the module.

        The file is read with ``allow_pickle=False``: loading never runs code.
        """
        return self.load_state_dict(read_npz(path))


def _shape(value):
    # a Tensor has .shape; np.shape would try to turn it into an array element by element
    return value.shape if hasattr(value, "shape") else np.shape(value)


def read_npz(path):
    """Every array of an ``.npz`` file, read without pickle; a clear ValueError if it is not one."""
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as e:   # numpy's readers raise many types on bad bytes: see below
        raise ValueError(f"{str(path)!r} is not a readable .npz checkpoint "
                         f"(corrupt, truncated, or holding objects that would need pickle): {e}") from None
    # a .npy file loads as a plain array, which is not a context manager: check before `with`
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{str(path)!r} is not an .npz checkpoint: it holds a single array")
    try:
        with archive:
            return {key: archive[key] for key in archive.files}
    except Exception as e:
        # a damaged archive fails in many ways: BadZipFile, zlib.error (compressed members), ValueError,
        # SyntaxError or tokenize.TokenError (a mangled array header), EOFError, MemoryError (a huge
        # shape in a mangled header); each means the same thing to the caller
        raise ValueError(f"{str(path)!r} is not a readable .npz checkpoint "
                         f"(corrupt, truncated, or holding objects that would need pickle): {e}") from None


def _walk(value, name, visiting):
    """Yield (name, Parameter) for everything reachable through attributes, lists, tuples and dicts.

    ``visiting`` holds the containers on the current path, so that a module that
    refers back to its parent does not recurse forever.
    """
    if isinstance(value, Parameter):
        yield name, value
        return
    if isinstance(value, Module):
        items = ((key, item) for key, item in vars(value).items() if not key.startswith("_"))
    elif isinstance(value, (list, tuple)):
        items = ((str(i), item) for i, item in enumerate(value))
    elif isinstance(value, dict):
        items = ((str(key), item) for key, item in value.items())
    else:
        return
    if id(value) in visiting:
        return
    visiting.add(id(value))
    for key, item in items:
        yield from _walk(item, f"{name}.{key}" if name else key, visiting)
    visiting.discard(id(value))
