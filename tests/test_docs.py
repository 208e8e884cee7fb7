"""Every python block of README.md and docs/*.md runs (tests/docs_runner.py), and the runner itself works."""
import re
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import docs_runner  # noqa: E402


# what some pages must print (their blocks show these lines to the reader)
PRINTED = {
    "custom_cell.md": ["(4, 5, 3) (4, 3)", "FAIL", "PASS", "['Wx', 'Uf', 'Un', 'b']"],
    "bptt.md": ["12.062061261168791", "FAIL", "correct BPTT               loss 0.1510  predicts 'ello'"],
    "engine.md": ["mul ['x', 'w'] True", "RuntimeError: backward through a graph that has already been freed"],
}


# pages whose text blocks after a python block are what that block prints, line for line (a block may
# leave lines out, marked "..." or "[... ...]", but every line it shows must be printed as shown)
VERBATIM = {"tracing.md", "bptt.md"}
OUTPUT = re.compile(r"^```python[ \t]*\n.*?^```[ \t]*\n\s*^```text[ \t]*\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", docs_runner.pages(), ids=lambda p: p.name)
def test_page_runs(page, tmp_path, capsys):
    docs_runner.run_page(page, tmp_path)
    printed = capsys.readouterr().out
    for expected in PRINTED.get(page.name, []):
        assert expected in printed, f"{page.name} should print {expected!r}"
    if page.name in VERBATIM:
        lines = {line.rstrip() for line in printed.splitlines()}
        shown = [line.rstrip() for block in OUTPUT.findall(page.read_text(encoding="utf-8"))
                 for line in block.splitlines()]
        assert shown, f"{page.name}: no output blocks found"
        for line in shown:
            if line.strip() not in ("...", "") and not line.strip().startswith("[..."):
                assert line in lines, f"{page.name} shows a line its code does not print: {line!r}"


def test_runner_finds_blocks_in_order_and_skips_others(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n```bash\nexit 1\n```\n\n```text\nnot code\n```\n\n"
                    "```python\nassert x == 1\ny = x + 1\n```\n")
    assert [line for line, _ in docs_runner.python_blocks(page.read_text())] == [4, 16]
    namespace = docs_runner.run_page(page, tmp_path)
    assert namespace["y"] == 2


def test_runner_reports_the_failing_block(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text("text\n\n```python\nok = True\n```\n\n```python\nraise ValueError('boom')\n```\n")
    with pytest.raises(docs_runner.DocsBlockError, match="line 8") as info:
        docs_runner.run_page(page, tmp_path)
    assert "boom" in str(info.value) and "bad.md" in str(info.value)


def test_blocks_run_in_a_temporary_directory(tmp_path):
    page = tmp_path / "cwd.md"
    page.write_text("```python\nimport os\nopen('made.txt', 'w').write('x')\nhere = os.getcwd()\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    assert docs_runner.run_page(page, work)["here"] == str(work)
    assert (work / "made.txt").exists()


def test_every_page_is_in_the_nav():
    nav = (docs_runner.ROOT / "mkdocs.yml").read_text()
    for page in docs_runner.pages()[1:]:
        assert page.name in nav, f"docs/{page.name} is not in mkdocs.yml's nav"
