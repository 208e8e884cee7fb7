"""Run the Python blocks of a Markdown page, so that the docs cannot rot.

Every fenced block opened with three backticks and ``python`` runs; the blocks of
one page share one namespace and run top to bottom, in a temporary working
directory, with matplotlib's non-interactive Agg backend.  Blocks fenced as
``text``, ``bash`` or anything else are not run.
"""
import os
import pathlib
import re
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def pages():
    """README.md and every docs/*.md, as paths."""
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def python_blocks(text):
    """``(line number, source)`` of every python block of a Markdown text."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


class DocsBlockError(AssertionError):
    """A docs block that raised: names the page and the line where the block starts."""


def run_page(path, workdir):
    """Run the python blocks of ``path`` in order in one namespace, inside ``workdir``; returns the namespace."""
    path = pathlib.Path(path)
    os.environ["MPLBACKEND"] = "Agg"
    namespace = {"__name__": f"docs_{path.stem}"}
    # a page is read as a fresh session: the compositions' programs that earlier tests wrote (one written on
    # NaN values takes another branch) are written again on first use
    from tinygrad_rnn import composites
    composites.attribute_set()
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        for line, source in python_blocks(path.read_text(encoding="utf-8")):
            # compiled with the page's name and line numbers, so a failure points into the page
            code = compile("\n" * (line - 1) + source, str(path), "exec")
            try:
                exec(code, namespace)
            except Exception as e:
                raise DocsBlockError(f"{path.name}: the python block at line {line} failed:\n"
                                     f"{traceback.format_exc()}") from e
    finally:
        os.chdir(previous)
        try:
            import matplotlib.pyplot as plt
            plt.close("all")
        except ImportError:
            pass
    return namespace
