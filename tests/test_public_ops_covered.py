"""Every public differentiable operation has a gradient property test.

The public operations are found by introspection, not listed by hand: the Tensor
class's public attributes and operator methods (including the tanh/sigmoid/relu
methods that ``functional`` attaches), the public functions of the engine module
(``concat``, ``stack``, ``where``) and of ``functional``.  Those
that are not differentiable are listed below with the reason.  A new public
operation fails this test until a hypothesis test in ``test_ops_gradients.py``
or ``test_functional.py`` declares it with ``@covers(...)``.
"""
import inspect

import numpy as np
import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.tensor as engine
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional

import strategies
import test_functional
import test_ops_gradients

TEST_MODULES = [test_ops_gradients, test_functional]

# public names that are not differentiable operations, and why
NOT_DIFFERENTIABLE = {
    "Tensor.backward": "runs backpropagation",
    "Tensor.detach": "stops the graph (test_ops_gradients.test_detach_stops_the_gradient)",
    "Tensor.retain_grad": "a flag for backward",
    "Tensor.numpy": "returns the data",
    "Tensor.item": "returns a Python number",
    "Tensor.shape": "metadata", "Tensor.ndim": "metadata", "Tensor.dtype": "metadata",
    "Tensor.size": "metadata", "Tensor.is_leaf": "metadata",
    "Tensor.__lt__": "comparison", "Tensor.__le__": "comparison", "Tensor.__gt__": "comparison",
    "Tensor.__ge__": "comparison", "Tensor.__eq__": "comparison", "Tensor.__ne__": "comparison",
    "tensor.is_grad_enabled": "reports the recording state",
    "tensor.grad": "computes gradients (test_second_order.py)",
    "Tensor.__float__": "returns a Python number", "Tensor.__int__": "returns a Python number",
    "tensor.derived": "makes constants (no gradient); its users are tested (test_functional)",
    "tensor.decide": "returns a Python value that picks a branch",
    "tensor.label": "names a tensor in a traced program", "tensor.time_step": "names time steps in a traced program",
}
COMPARISONS = [n.split(".")[1] for n, why in NOT_DIFFERENTIABLE.items() if why == "comparison"]

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
    return sorted(n for n in public_operations() if n not in NOT_DIFFERENTIABLE and n not in strategies.COVERED)


def test_every_public_differentiable_operation_has_a_gradient_property_test():
    missing = uncovered()
    assert not missing, (f"public operations without a gradient property test: {missing}; add a hypothesis "
                         f"test with @covers(...) in test_ops_gradients.py or test_functional.py, or list "
                         f"the name in NOT_DIFFERENTIABLE with the reason")


def test_registered_tests_are_collected_hypothesis_tests_of_existing_operations():
    known = set(public_operations())
    collected = {id(getattr(m, n)) for m in TEST_MODULES for n in dir(m) if n.startswith("test_")}
    for name, tests in strategies.COVERED.items():
        assert name in known, f"@covers names {name!r}, which is not a public operation"
        for test in tests:
            assert id(test) in collected, f"{test.__name__} (covering {name}) is not a collected test"
            assert hasattr(test, "hypothesis"), f"{test.__name__} (covering {name}) is not a property test"
    assert not set(strategies.COVERED) & set(NOT_DIFFERENTIABLE), set(strategies.COVERED) & set(NOT_DIFFERENTIABLE)


def test_exclusions_are_real_and_comparisons_carry_no_gradient():
    known = set(public_operations())
    stale = [n for n in NOT_DIFFERENTIABLE if n not in known]
    assert not stale, f"NOT_DIFFERENTIABLE lists names that no longer exist: {stale}"
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    for name in COMPARISONS:
        out = getattr(x, name)(1.5)
        assert isinstance(out, Tensor) and not out.requires_grad, name


def test_new_operations_without_a_test_are_reported(monkeypatch):
    for owner, attr in [(Tensor, "softplus"), (Tensor, "__mod__"), (engine, "roll"), (functional, "gelu")]:
        op = lambda x, *rest: x  # noqa: E731
        op.__module__ = owner.__name__ if inspect.ismodule(owner) else owner.__module__   # as if defined there
        monkeypatch.setattr(owner, attr, op, raising=False)
    assert uncovered() == ["Tensor.__mod__", "Tensor.softplus", "functional.gelu", "tensor.roll"]
    with pytest.raises(AssertionError, match="softplus"):
        test_every_public_differentiable_operation_has_a_gradient_property_test()


def test_the_functional_methods_are_the_compositions_and_every_function_is_covered():
    for name in functional.__all__:
        assert f"functional.{name}" in strategies.COVERED, name
    for name in ["tanh", "sigmoid", "relu"]:
        assert getattr(Tensor, name) is getattr(functional, name)
        assert f"Tensor.{name}" in strategies.COVERED
    assert tg.concat is engine.concat and tg.stack is engine.stack and tg.where is engine.where
    assert tg.maximum is engine.maximum and tg.minimum is engine.minimum
