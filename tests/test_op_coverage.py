"""Every public operation has a gradient property test.

The public operations are found by introspection, not listed by hand: every
attribute that ``Tensor`` defines (methods, dunders, properties, including the
tanh/sigmoid/relu methods that ``functional`` attaches), every public function of
the engine module (``tinygrad_rnn.tensor``) and of ``tinygrad_rnn.functional``.
Each must either appear in a registry (``GRADIENT_TESTS`` of ``test_prop_ops.py``
or ``test_prop_functional.py``: name -> hypothesis tests) or be listed below as
exempt with the reason.  A new public operation without a gradient property test
fails ``test_every_public_operation_has_a_gradient_property_test``.
"""
import inspect

import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor
from tinygrad_rnn import functional as F
from tinygrad_rnn import tensor as engine

import test_prop_functional
import test_prop_ops

REGISTRY = {**test_prop_ops.GRADIENT_TESTS, **test_prop_functional.GRADIENT_TESTS}

# Public names that are not differentiable operations, and why.
EXEMPT = {
    # Python object protocol and class machinery
    "Tensor.__init__": "constructor", "Tensor.__repr__": "printing", "Tensor.__len__": "size query",
    "Tensor.__bool__": "truth value", "Tensor.__hash__": "identity hash",
    "Tensor.__array_ufunc__": "makes ndarray (op) Tensor defer to Tensor's reflected operator",
    "Tensor.__slots__": "storage", "Tensor.__module__": "class metadata", "Tensor.__doc__": "class metadata",
    "Tensor.__qualname__": "class metadata", "Tensor.__weakref__": "weak references",
    "Tensor.__firstlineno__": "class metadata", "Tensor.__static_attributes__": "class metadata",
    # comparisons return Tensors without gradient
    "Tensor.__lt__": "comparison", "Tensor.__le__": "comparison", "Tensor.__gt__": "comparison",
    "Tensor.__ge__": "comparison", "Tensor.__eq__": "comparison", "Tensor.__ne__": "comparison",
    # attributes and queries
    "Tensor.data": "attribute", "Tensor.grad": "attribute", "Tensor.requires_grad": "attribute",
    "Tensor.name": "attribute", "Tensor.shape": "query", "Tensor.ndim": "query", "Tensor.dtype": "query",
    "Tensor.size": "query", "Tensor.is_leaf": "query",
    # leave the graph or drive it
    "Tensor.numpy": "returns the array", "Tensor.item": "returns a Python number",
    "Tensor.detach": "stops the gradient by definition (test_graph_memory, test_prop_ops check it)",
    "Tensor.retain_grad": "marks a node", "Tensor.backward": "runs autodiff itself",
    # engine module: the class and the recording switch
    "Tensor": "the class itself", "no_grad": "context manager", "is_grad_enabled": "query",
}


def public_operations():
    """Every public name the engine and functional offer, as registry keys."""
    names = set()
    for attr in vars(Tensor):
        if attr.startswith("__") and attr.endswith("__") or not attr.startswith("_"):
            names.add(f"Tensor.{attr}")
    for module, prefix in [(engine, ""), (F, "F.")]:
        public = set(getattr(module, "__all__", ()))
        public |= {n for n, obj in vars(module).items()
                   if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                   and getattr(obj, "__module__", None) == module.__name__}
        names |= {prefix + n for n in public}
    return names


def uncovered():
    return sorted(n for n in public_operations() if n not in REGISTRY and n not in EXEMPT)


def test_every_public_operation_has_a_gradient_property_test():
    missing = uncovered()
    assert not missing, (f"public operations without a gradient property test: {missing}; add a hypothesis "
                         f"test to test_prop_ops.py / test_prop_functional.py and register it in GRADIENT_TESTS "
                         f"(or, if it is not differentiable, list it in EXEMPT with the reason)")


def test_the_introspection_sees_the_operations_we_know():
    ops = public_operations()
    for name in ["Tensor.__add__", "Tensor.__rpow__", "Tensor.__matmul__", "Tensor.__getitem__", "Tensor.T",
                 "Tensor.clip", "Tensor.max", "Tensor.tanh", "Tensor.relu", "concat", "stack", "where",
                 "F.softmax", "F.cross_entropy", "F.mse_loss"]:
        assert name in ops, name
    assert {f"F.{n}" for n in F.__all__} <= ops


def test_a_new_public_operation_without_a_test_is_reported(monkeypatch):
    monkeypatch.setattr(Tensor, "softplus", lambda self: (self.exp() + 1.0).log(), raising=False)
    monkeypatch.setattr(Tensor, "__mod__", lambda self, other: self, raising=False)

    def gelu(x):
        return x

    def split(t, n):
        return t
    gelu.__module__, split.__module__ = F.__name__, engine.__name__   # as if defined in those modules
    monkeypatch.setattr(F, "gelu", gelu, raising=False)
    monkeypatch.setattr(engine, "split", split, raising=False)
    assert uncovered() == ["F.gelu", "Tensor.__mod__", "Tensor.softplus", "split"]


def test_registry_names_exist_and_exempt_names_are_not_registered():
    ops = public_operations()
    stale = sorted(set(REGISTRY) - ops)
    assert not stale, f"registered names that are not public operations (renamed or removed?): {stale}"
    assert not set(REGISTRY) & set(EXEMPT), set(REGISTRY) & set(EXEMPT)


@pytest.mark.parametrize("module", [test_prop_ops, test_prop_functional], ids=lambda m: m.__name__)
def test_registered_tests_are_collected_hypothesis_tests(module):
    for op, tests in module.GRADIENT_TESTS.items():
        assert tests, op
        for test in tests:
            assert test.__name__.startswith("test_"), (op, test)
            assert getattr(module, test.__name__) is test, f"{test.__name__} is not a module-level test"
            assert hasattr(test, "hypothesis"), f"{test.__name__} is not a hypothesis property test"


def test_every_functional_function_has_a_central_difference_test():
    for name in F.__all__:
        assert f"F.{name}" in test_prop_functional.GRADIENT_TESTS, name
    for name in ["tanh", "sigmoid", "relu"]:
        assert getattr(Tensor, name) is getattr(F, name)          # the methods are the compositions
        assert f"Tensor.{name}" in test_prop_functional.GRADIENT_TESTS
    assert tg.concat is engine.concat and tg.stack is engine.stack and tg.where is engine.where
