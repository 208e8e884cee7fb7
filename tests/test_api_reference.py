"""Every public name has a docstring and appears in the API reference (docs/api.md).

The public names are read from the package as it is: the ``__all__`` of the modules below, and
the public members (methods, properties, attributes, operators) of every class among them.

"In the reference" follows the ``:::`` entries of docs/api.md as mkdocstrings renders them with
the options in mkdocs.yml (``filters: public``): a module entry documents the names in its
``__all__``, and a class documents the members defined in its own body, and the inherited ones
that the entry's ``inherited_members`` option names.  A name is covered when
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


def _is_public(name, value):
    if is_dunder(name):   # operators and protocols; the constructor shows as the class's signature
        return name != "__init__" and inspect.isfunction(value)
    return not name.startswith("_")


def public_members(cls, package="tinygrad_rnn"):
    """``{name: (defining class, value)}`` of the public members a class has, its own and inherited
    (from classes of ``package``, not ``object``, builtins or the standard library): methods,
    properties and attributes not starting with an underscore, and operator methods (``__add__``,
    ``__getitem__``, ...)."""
    members = {}
    for base in reversed(cls.__mro__):
        if not base.__module__.startswith(package):
            continue
        for name, value in vars(base).items():
            if _is_public(name, value):
                members[name] = (base, value)
            else:
                members.pop(name, None)
    return members


def coverage_key(definer, name, value):
    """What makes two names the same thing: the object itself for functions, classes, modules,
    properties and slots (``Tensor.tanh`` is ``functional.tanh``), else the attribute where it is
    defined (two attributes holding the number 4 are not the same name)."""
    if inspect.isroutine(value) or inspect.isclass(value) or inspect.ismodule(value) \
            or isinstance(value, (property, types.MemberDescriptorType)):
        return ("object", id(value))
    return ("attribute", id(definer), name)


def defined_in_body(cls, name, value):
    """Whether ``value`` is written in the class body (or, for a slot, assigned in ``__init__``),
    where mkdocstrings reads the source.  A function attached to the class from elsewhere
    (``Tensor.tanh = tanh``) is documented where it is defined."""
    if isinstance(value, types.MemberDescriptorType):
        return value.__objclass__ is cls
    if isinstance(value, property):
        return value.fget.__qualname__.startswith(cls.__qualname__ + ".")
    fn = _function_of(value)
    if fn is not None:   # ``__repr__ = __str__`` is a second name for a function written elsewhere
        return fn.__qualname__ == f"{cls.__qualname__}.{fn.__name__}" and fn.__name__ == name
    return True


def attribute_docstrings(owner):
    """``{name: docstring}`` for attributes with a string literal right below their assignment,
    in a module, a class body or its ``__init__`` (``self.name = ...``), as the docs generator
    reads them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(owner)))
    body = tree.body if inspect.ismodule(owner) else tree.body[0].body
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
    return attribute_docstrings(owner).get(name, "").strip()


def api_entries(text=None):
    """``(dotted path, inherited members)`` of the ``:::`` entries of docs/api.md, in order; the
    second is the entry's ``inherited_members`` option: True, False or a list of names."""
    text = API_PAGE.read_text(encoding="utf-8") if text is None else text
    entries = []
    for match in ENTRY.finditer(text):
        options = re.match(r"(?:[ \t]+\S.*\n|[ \t]*\n)*", text[match.end() + 1:]).group(0)
        inherited = re.search(r"^\s+inherited_members:\s*(.+)$", options, re.M)
        value = False
        if inherited:
            raw = inherited.group(1).strip()
            value = raw == "true" or [n.strip() for n in raw.strip("[]").split(",") if n.strip()]
        entries.append((match.group(1), value))
    return entries


def reference_anchors(text=None):
    """``{anchor: coverage key}`` for everything the API page documents, with the anchor (the HTML
    id) that mkdocstrings gives each: the entry's path, then member names."""
    anchors = {}

    def add_class(path, cls, inherited):
        for name, (definer, value) in public_members(cls).items():
            own = definer is cls and defined_in_body(cls, name, value)
            if own or inherited is True or (inherited and name in inherited):
                anchors[f"{path}.{name}"] = coverage_key(definer, name, value)

    for path, inherited in api_entries(text):
        obj = resolve(path)
        anchors[path] = coverage_key(None, path, obj)
        if inspect.ismodule(obj):
            for name in getattr(obj, "__all__", ()):
                member = getattr(obj, name)
                anchors[f"{path}.{name}"] = coverage_key(obj, name, member)
                if inspect.isclass(member):
                    add_class(f"{path}.{name}", member, inherited)
        elif inspect.isclass(obj):
            add_class(path, obj, inherited)
    return anchors


def public_names():
    """``(qualified name, owner, short name, object, coverage key)`` of every public name, read from
    the package; a name that two modules export is listed once, under the first."""
    names, seen = [], set()

    def add(qualname, owner, name, obj, key):
        if key not in seen:
            seen.add(key)
            names.append((qualname, owner, name, obj, key))

    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} has no __all__"
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) and obj.__name__ in RETIRING:
                continue
            add(f"{module_name}.{name}", module, name, obj, coverage_key(module, name, obj))
            if inspect.isclass(obj):
                for member, (definer, value) in public_members(obj).items():
                    add(f"{module_name}.{name}.{member}", definer, member, value,
                        coverage_key(definer, member, value))
    return names


PUBLIC = public_names()


def test_the_reference_names_real_objects():
    paths = [path for path, _ in api_entries()]
    assert "tinygrad_rnn.tensor.Tensor" in paths and "tinygrad_rnn.functional" in paths
    anchors = reference_anchors()          # raises if an entry names nothing importable
    assert len(anchors) > len(paths)


@pytest.mark.parametrize("qualname, owner, name, obj, key", PUBLIC, ids=[n[0] for n in PUBLIC])
def test_public_name_has_a_docstring(qualname, owner, name, obj, key):
    assert docstring(owner, name, obj), f"{qualname} has no docstring"


def test_every_public_name_is_in_the_reference():
    documented = set(reference_anchors().values())
    missing = [qualname for qualname, *_, key in PUBLIC if key not in documented]
    assert not missing, f"public names missing from docs/api.md: {missing}"


def test_the_tensor_reference_is_complete():
    """The constructor, every method, operator and property of Tensor (those the contract lists)."""
    import tinygrad_rnn.tensor as engine
    anchors = reference_anchors()
    for name in ["numpy", "item", "backward", "detach", "retain_grad", "sum", "mean", "max", "reshape",
                 "transpose", "T", "shape", "dtype", "exp", "log", "clip", "__add__", "__radd__", "__matmul__",
                 "__rmatmul__", "__pow__", "__neg__", "__getitem__", "__lt__", "data", "grad", "requires_grad"]:
        assert f"tinygrad_rnn.tensor.Tensor.{name}" in anchors, name
    documented = set(anchors.values())
    for name in ["tanh", "sigmoid", "relu"]:   # attached by functional: documented there
        assert ("object", id(getattr(engine.Tensor, name))) in documented, name
    assert "tinygrad_rnn.tensor.Tensor.__init__" not in anchors   # shown as the class's signature


# ---------------------------------------------------------------- the checks themselves


class _Base:
    def inherited(self):
        """From the base."""


class _Sample(_Base):
    """A class with one of each kind of member."""

    __slots__ = ("kept", "bare", "_hidden")
    size = property(lambda self: 1)
    """How many."""
    width = property(lambda self: 2)
    count = 4

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
    members = public_members(_Sample, package=_Sample.__module__)
    assert set(members) == {"kept", "bare", "size", "width", "count", "__add__", "__sub__", "method", "inherited"}
    assert members["inherited"][0] is _Base and members["size"][0] is _Sample
    have = {name for name, (_, value) in members.items() if docstring(_Sample, name, value)}
    assert have == {"kept", "size", "__add__", "inherited"}
    # the same number in two places is two names; the same function is one
    assert coverage_key(_Sample, "count", 4) != coverage_key(_Base, "count", 4)
    assert coverage_key(_Sample, "x", _Base.inherited) == coverage_key(_Base, "y", _Base.inherited)


SAMPLE_LIMIT = 3
"""A documented module-level constant."""
SAMPLE_BARE = 4


def test_module_attributes_are_read_too():
    import sys
    here = sys.modules[__name__]
    assert docstring(here, "SAMPLE_LIMIT", SAMPLE_LIMIT) == "A documented module-level constant."
    assert docstring(here, "SAMPLE_BARE", SAMPLE_BARE) == ""


def test_a_missing_entry_or_member_is_found():
    import tinygrad_rnn.tensor as engine
    import tinygrad_rnn.functional as F
    from tinygrad_rnn import optim
    page = "::: tinygrad_rnn.tensor.Tensor\n\n::: tinygrad_rnn.optim\n"
    documented = set(reference_anchors(page).values())
    assert ("object", id(engine.Tensor.__add__)) in documented and ("object", id(engine.Tensor.T)) in documented
    assert ("object", id(F.cross_entropy)) not in documented
    assert ("object", id(engine.Tensor.tanh)) not in documented
    assert ("object", id(optim.SGD.step)) in documented and ("object", id(optim.SGD.zero_grad)) not in documented
    with pytest.raises(AttributeError):
        reference_anchors("::: tinygrad_rnn.tensor.no_such_name\n")


def test_inherited_members_follow_the_entry_options():
    from tinygrad_rnn import optim
    page = ("::: tinygrad_rnn.optim\n    options:\n      inherited_members: [zero_grad]\n      heading_level: 3\n"
            "\n::: tinygrad_rnn.nn.Linear\n    options:\n      inherited_members: true\n")
    assert api_entries(page) == [("tinygrad_rnn.optim", ["zero_grad"]), ("tinygrad_rnn.nn.Linear", True)]
    anchors = reference_anchors(page)
    assert "tinygrad_rnn.optim.SGD.zero_grad" in anchors and "tinygrad_rnn.optim.SGD.state_dict" not in anchors
    assert anchors["tinygrad_rnn.optim.Adam.zero_grad"] == ("object", id(optim.SGD.zero_grad))
    assert "tinygrad_rnn.nn.Linear.parameters" in anchors and "tinygrad_rnn.nn.Linear.forward" in anchors
