"""Every public operation has a row in the test table (``op_table.py``).

The public operations are found by introspection, not listed by hand: the Tensor
class's public attributes and operator methods (including the tanh/sigmoid/relu
methods that ``functional`` attaches), the public functions of the engine module
(``concat``, ``stack``, ``where``) and of ``functional``.  The public names that are
not operations on tensors are listed below with the reason.  A new public
operation fails this test until a row of ``op_table.py`` covers it; the row then
gets the gradient, float32, second-order, traced and mutation checks.
"""
import inspect
from pathlib import Path

import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.tensor as engine
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional

import op_table

# public names that are not operations on tensors, and why
NOT_OPERATIONS = {
    "Tensor.backward": "runs backpropagation",
    "Tensor.retain_grad": "a flag for backward",
    "Tensor.numpy": "returns the data",
    "Tensor.item": "returns a Python number",
    "Tensor.shape": "metadata", "Tensor.ndim": "metadata", "Tensor.dtype": "metadata",
    "Tensor.size": "metadata", "Tensor.is_leaf": "metadata",
    "tensor.is_grad_enabled": "reports the recording state",
    "tensor.grad": "computes gradients (test_second_order.py)",
    "Tensor.__float__": "returns a Python number", "Tensor.__int__": "returns a Python number",
    "tensor.derived": "makes constants (no gradient); its users are tested (test_functional)",
    "tensor.decide": "returns a Python value that picks a branch",
    "tensor.label": "names a tensor in a traced program", "tensor.time_step": "names time steps in a traced program",
}
COVERED = {name for row in op_table.ROWS for name in row.covers}
DIFFERENTIATED = {name for row in op_table.DIFFERENTIABLE for name in row.covers}

# Python's own plumbing on the class, not operations
PLUMBING = {"__init__", "__repr__", "__len__", "__bool__", "__hash__", "__array_ufunc__", "__slots__",
            "__weakref__", "__module__", "__doc__", "__dict__", "__qualname__", "__firstlineno__",
            "__static_attributes__", "__annotations__"}


def public_tensor_operations():
    names = []
    for name, value in vars(Tensor).items():
        if type(value).__name__ == "member_descriptor":        # data, grad, requires_grad, name
            continue
        dunder = name.startswith("__") and name.endswith("__")
        if (dunder and name not in PLUMBING) or not name.startswith("_"):
            names.append(f"Tensor.{name}")
    return names


def public_functions(module, prefix):
    exported = set(getattr(module, "__all__", ()))
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        defined_here = getattr(value, "__module__", None) == module.__name__
        if inspect.isfunction(value) and (defined_here or name in exported):
            names.append(f"{prefix}.{name}")
        elif inspect.isclass(value) and defined_here and name not in ("Tensor", "no_grad"):
            names.append(f"{prefix}.{name}")     # a new public class would need a decision too
    return names


def public_operations():
    return (public_tensor_operations() + public_functions(engine, "tensor")
            + public_functions(functional, "functional"))


def test_introspection_finds_the_operations_we_know():
    found = set(public_operations())
    for name in ["Tensor.__add__", "Tensor.__rpow__", "Tensor.__matmul__", "Tensor.__getitem__", "Tensor.T",
                 "Tensor.sum", "Tensor.tanh", "tensor.concat", "tensor.where", "functional.cross_entropy",
                 "functional.mse_loss", "Tensor.clip", "Tensor.max", "Tensor.relu", "tensor.stack",
                 "functional.softmax", "Tensor.sin", "Tensor.min", "Tensor.sum_to", "tensor.maximum",
                 "tensor.minimum", "functional.logsumexp"]:
        assert name in found, name
    assert {f"functional.{n}" for n in functional.__all__} <= found


def uncovered():
    return sorted(n for n in public_operations() if n not in NOT_OPERATIONS and n not in COVERED)


def test_every_public_operation_has_a_row():
    missing = uncovered()
    assert not missing, (f"public operations without a row in tests/op_table.py: {missing}; add one, or list "
                         f"the name in NOT_OPERATIONS with the reason")


def test_rows_name_existing_operations_and_say_whether_they_are_differentiated():
    known = set(public_operations())
    for row in op_table.ROWS:
        assert row.covers, row.name
        for name in row.covers:
            assert name in known, f"row {row.name!r} names {name!r}, which is not a public operation"
    assert not COVERED & set(NOT_OPERATIONS), COVERED & set(NOT_OPERATIONS)
    # an operation is either differentiated by its rows or has no gradient at all, never half of each
    assert not DIFFERENTIATED & (COVERED - DIFFERENTIATED)
    assert COVERED - DIFFERENTIATED == {"Tensor.detach", "Tensor.__lt__", "Tensor.__le__", "Tensor.__gt__",
                                        "Tensor.__ge__", "Tensor.__eq__", "Tensor.__ne__"}


def test_exclusions_are_real():
    known = set(public_operations())
    stale = [n for n in NOT_OPERATIONS if n not in known]
    assert not stale, f"NOT_OPERATIONS lists names that no longer exist: {stale}"


def test_new_operations_without_a_test_are_reported(monkeypatch):
    for owner, attr in [(Tensor, "softplus"), (Tensor, "__mod__"), (engine, "roll"), (functional, "gelu")]:
        op = lambda x, *rest: x  # noqa: E731
        op.__module__ = owner.__name__ if inspect.ismodule(owner) else owner.__module__   # as if defined there
        monkeypatch.setattr(owner, attr, op, raising=False)
    assert uncovered() == ["Tensor.__mod__", "Tensor.softplus", "functional.gelu", "tensor.roll"]
    with pytest.raises(AssertionError, match="softplus"):
        test_every_public_operation_has_a_row()


def test_the_functional_methods_are_the_compositions_and_every_function_is_differentiated():
    for name in functional.__all__:
        assert f"functional.{name}" in DIFFERENTIATED, name
    for name in ["tanh", "sigmoid", "relu"]:
        assert getattr(Tensor, name) is getattr(functional, name)
        assert f"Tensor.{name}" in DIFFERENTIATED
    assert tg.concat is engine.concat and tg.stack is engine.stack and tg.where is engine.where
    assert tg.maximum is engine.maximum and tg.minimum is engine.minimum


def test_the_row_that_docs_engine_md_shows_is_the_tables():
    root = Path(__file__).resolve().parent.parent
    shown = [line.strip() for line in (root / "docs" / "engine.md").read_text().splitlines()
             if line.strip().startswith('Row("sin"')]
    assert len(shown) == 1 and shown[0] in Path(op_table.__file__).read_text()
