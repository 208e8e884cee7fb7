"""Every public name has a docstring and appears in the API reference (docs/api.md).

The public names are read from the package as it is: the ``__all__`` of the modules below, and
the public members (methods, properties, attributes, operators) of every class among them.

"In the reference" follows the ``:::`` entries of docs/api.md as mkdocstrings renders them with
the options in mkdocs.yml (``filters: public``): a module entry documents the names in its
``__all__``, and a class documents the members defined in its own body.  A name is covered when
its object is documented by some entry (``Tensor.tanh`` is ``functional.tanh``, documented with
``functional``).  ``test_docs_site.py`` checks this model against the built page: each anchor
computed here must be on it.
"""
import ast
import importlib
import inspect
import pathlib
import re
import textwrap
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
API_PAGE = ROOT / "docs" / "api.md"
PUBLIC_MODULES = ["tinygrad_rnn", "tinygrad_rnn.functional", "tinygrad_rnn.nn", "tinygrad_rnn.optim",
                  "tinygrad_rnn.checking", "tinygrad_rnn.tracing", "tinygrad_rnn.viz"]
# the contract marks it for retirement (replaced by compiled compositions): kept out of the reference
RETIRING = {"tinygrad_rnn.fused"}
ENTRY = re.compile(r"^::: *([\w.]+) *$", re.M)


def resolve(path):
    """The object that a dotted path names: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"nothing importable in {path!r}")


def is_dunder(name):
    return name.startswith("__") and name.endswith("__")


def _function_of(value):
    """The function behind a method, static/class method or property (None for other members)."""
    if isinstance(value, (staticmethod, classmethod)):
        return value.__func__
    if isinstance(value, property):
        return value.fget
    return value if inspect.isfunction(value) else None


def public_members(cls):
    """``{name: value}`` of a class's own public members: methods, properties and attributes not
    starting with an underscore, and operator methods (``__add__``, ``__getitem__``, ...).

    ``__init__`` is left out: the class's entry shows the constructor's signature and docstring.
    """
    members = {}
    for name, value in vars(cls).items():
        if is_dunder(name):
            if name != "__init__" and inspect.isfunction(value):
                members[name] = value
        elif not name.startswith("_"):
            members[name] = value
    return members


def defined_in_body(cls, value):
    """Whether ``value`` is written in the class body (or, for a slot, assigned in ``__init__``),
    which is what a reader of the source (and mkdocstrings) finds there.  A function attached to
    the class from elsewhere (``Tensor.tanh = tanh``) is documented where it is defined."""
    if isinstance(value, types.MemberDescriptorType):
        return value.__objclass__ is cls
    fn = _function_of(value)
    if fn is not None:
        return fn.__qualname__.startswith(cls.__qualname__ + ".")
    return True


def attribute_docstrings(cls):
    """``{name: docstring}`` for attributes with a string literal right below their assignment,
    in the class body or in ``__init__`` (``self.name = ...``), as the docs generator reads them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    blocks = [body] + [node.body for node in body
                       if isinstance(node, ast.FunctionDef) and node.name == "__init__"]
    found = {}
    for statements in blocks:
        for before, after in zip(statements, statements[1:]):
            if not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                continue
            targets = before.targets if isinstance(before, ast.Assign) else \
                [before.target] if isinstance(before, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = after.value.value
                elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id == "self":
                    found[target.attr] = after.value.value
    return found


def docstring(owner, name, value):
    """The docstring that a reader sees for ``owner.name`` ('' when there is none)."""
    if inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value):
        return (value.__doc__ or "").strip()
    fn = _function_of(value)
    if fn is not None and fn.__doc__:
        return fn.__doc__.strip()
    if inspect.isclass(owner):
        return attribute_docstrings(owner).get(name, "").strip()
    return ""


def api_entries(text=None):
    """The dotted paths of the ``:::`` entries of docs/api.md, in order."""
    return ENTRY.findall(API_PAGE.read_text(encoding="utf-8") if text is None else text)


def reference_anchors(text=None):
    """``{anchor: object}`` for everything the API page documents, with the anchor (the HTML id)
    that mkdocstrings gives each: the entry's path, then member names."""
    anchors = {}

    def add_class(path, cls):
        for name, value in public_members(cls).items():
            if defined_in_body(cls, value):
                anchors[f"{path}.{name}"] = value

    for path in api_entries(text):
        obj = resolve(path)
        anchors[path] = obj
        if inspect.ismodule(obj):
            for name in getattr(obj, "__all__", ()):
                member = getattr(obj, name)
                anchors[f"{path}.{name}"] = member
                if inspect.isclass(member):
                    add_class(f"{path}.{name}", member)
        elif inspect.isclass(obj):
            add_class(path, obj)
    return anchors


def public_names():
    """``(qualified name, owner, short name, object)`` of every public name, read from the package;
    an object that two modules export is listed once, under the first."""
    names, seen = [], set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} has no __all__"
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) and obj.__name__ in RETIRING:
                continue
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            names.append((f"{module_name}.{name}", module, name, obj))
            if inspect.isclass(obj):
                for member, value in public_members(obj).items():
                    names.append((f"{module_name}.{name}.{member}", obj, member, value))
    return names


def test_the_reference_names_real_objects():
    entries = api_entries()
    assert "tinygrad_rnn.tensor.Tensor" in entries and "tinygrad_rnn.functional" in entries
    anchors = reference_anchors()          # raises if an entry names nothing importable
    assert len(anchors) > len(entries)


@pytest.mark.parametrize("qualname, owner, name, obj", public_names(), ids=[n[0] for n in public_names()])
def test_public_name_has_a_docstring(qualname, owner, name, obj):
    assert docstring(owner, name, obj), f"{qualname} has no docstring"


def test_every_public_name_is_in_the_reference():
    documented = {id(obj) for obj in reference_anchors().values()}
    missing = [qualname for qualname, _, _, obj in public_names() if id(obj) not in documented]
    assert not missing, f"public names missing from docs/api.md: {missing}"


def test_the_tensor_reference_is_complete():
    """The constructor, every method, operator and property of Tensor (the ones the contract lists)."""
    import tinygrad_rnn.tensor as engine
    anchors = reference_anchors()
    for name in ["numpy", "item", "backward", "detach", "retain_grad", "sum", "mean", "max", "reshape",
                 "transpose", "T", "shape", "dtype", "exp", "log", "clip", "__add__", "__radd__", "__matmul__",
                 "__rmatmul__", "__pow__", "__neg__", "__getitem__", "__lt__", "data", "grad", "requires_grad"]:
        assert f"tinygrad_rnn.tensor.Tensor.{name}" in anchors, name
    documented = {id(obj) for obj in anchors.values()}
    for name in ["tanh", "sigmoid", "relu"]:   # attached by functional: documented there
        assert id(getattr(engine.Tensor, name)) in documented, name
    assert "tinygrad_rnn.tensor.Tensor.__init__" not in anchors   # shown as the class's signature


# ---------------------------------------------------------------- the checks themselves


class _Sample:
    """A class with one of each kind of member."""

    __slots__ = ("kept", "bare", "_hidden")
    size = property(lambda self: 1)
    """How many."""
    width = property(lambda self: 2)

    def __init__(self):
        self.kept = 1
        """Kept."""
        self.bare = 2

    def __add__(self, other):
        """Add."""

    def __sub__(self, other):
        pass

    def method(self):
        pass


def test_members_and_docstrings_are_read_as_a_reader_sees_them():
    members = public_members(_Sample)
    assert set(members) == {"kept", "bare", "size", "width", "__add__", "__sub__", "method"}
    have = {name for name, value in members.items() if docstring(_Sample, name, value)}
    assert have == {"kept", "size", "__add__"}


def test_a_missing_entry_or_member_is_found():
    import tinygrad_rnn.tensor as engine
    import tinygrad_rnn.functional as F
    without_functional = reference_anchors("::: tinygrad_rnn.tensor.Tensor\n::: tinygrad_rnn.optim\n")
    documented = {id(obj) for obj in without_functional.values()}
    assert id(engine.Tensor.__add__) in documented and id(engine.Tensor.T) in documented
    assert id(F.cross_entropy) not in documented and id(engine.Tensor.tanh) not in documented
    assert "tinygrad_rnn.optim.SGD" in without_functional
    with pytest.raises(AttributeError):
        reference_anchors("::: tinygrad_rnn.tensor.no_such_name\n")
