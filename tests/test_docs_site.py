"""The docs site: every page linked from the home page, and one strict build that works offline.

The build (``mkdocs build --strict``, once per run) is checked for what an offline reader needs:
nothing that the pages load comes from the network, code is coloured when the site is built,
formulas are typeset by the KaTeX copy shipped in docs/, and the API page has an entry for every
public name (the anchors that tests/test_api_reference.py computes from docs/api.md).
"""
import html
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_api_reference as reference  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# what a page loads: <script src>, <link href>, <img src>, <iframe src>; url() and @import in CSS
LOADS = [
    re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.I),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?([^\"'\s>]+)", re.I),
    re.compile(r"<(?:img|iframe|source|embed)\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.I),
]
CSS_LOADS = [
    re.compile(r"url\(\s*[\"']?([^\"')]+)", re.I),
    re.compile(r"@import\s+[\"']([^\"']+)", re.I),
]
REMOTE = re.compile(r"^(?:https?:)?//", re.I)


def nav_pages():
    """The Markdown files named in mkdocs.yml's nav, in order."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.search(r"^nav:\n((?:[ \t]+.*\n)+)", text, re.M)
    assert nav, "mkdocs.yml has no nav"
    return re.findall(r":\s*(\S+\.md)\s*$", nav.group(1), re.M)


def remote_loads(text, css=False):
    """The network addresses that an HTML page (with its <style> blocks) or a stylesheet loads."""
    found = []
    if not css:
        found += [m for pattern in LOADS for m in pattern.findall(text)]
        text = " ".join(re.findall(r"<style\b[^>]*>(.*?)</style>", text, re.S | re.I))
    found += [m for pattern in CSS_LOADS for m in pattern.findall(text)]
    return [address for address in found if REMOTE.match(html.unescape(address).strip())]


# ---------------------------------------------------------------- without a build


def test_the_home_page_links_every_page_in_the_nav_and_nothing_else():
    pages = nav_pages()
    assert pages[0] == "index.md" and "tracing.md" in pages and "api.md" in pages
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]*)?\)", home)
    missing = [p for p in pages[1:] if p not in linked]
    assert not missing, f"docs/index.md does not link these pages of the nav: {missing}"
    stray = [p for p in linked if p not in pages]
    assert not stray, f"docs/index.md links pages that are not in the nav: {stray}"
    on_disk = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(pages) == on_disk, "every docs/*.md is in the nav, and every nav entry exists"


def test_remote_loads_are_found():
    page = ('<script src="https://cdn.example/x.js"></script><script src="assets/a.js"></script>'
            "<link rel=stylesheet href='//fonts.example/css'><link href=\"../b.css\" rel=\"stylesheet\">"
            '<a href="https://example.org/">a link to read is fine</a>'
            "<style>@font-face{src:url(https://f.example/a.woff2)} .k{background:url(img/x.png)}</style>")
    assert remote_loads(page) == ["https://cdn.example/x.js", "//fonts.example/css", "https://f.example/a.woff2"]
    css = "@import 'http://x.example/y.css'; .a{src:url( \"fonts/k.woff2\" )} .b{src:url(HTTPS://z/w)}"
    assert remote_loads(css, css=True) == ["HTTPS://z/w", "http://x.example/y.css"]


def test_the_vendored_katex_is_complete():
    """Every font the stylesheet asks for first (woff2, which every current browser takes) is there."""
    katex = DOCS / "assets" / "katex"
    css = (katex / "katex.min.css").read_text(encoding="utf-8")
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", css))
    assert len(fonts) >= 15
    assert all((katex / f).is_file() for f in fonts), sorted(f for f in fonts if not (katex / f).is_file())
    assert (katex / "katex.min.js").is_file() and (katex / "contrib" / "auto-render.min.js").is_file()
    assert (katex / "LICENSE").is_file()


# ---------------------------------------------------------------- one build


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_the_site_loads_nothing_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    sheets = sorted(site.rglob("*.css"))
    assert len(pages) >= len(nav_pages()) and sheets
    remote = {}
    for path in pages + sheets:
        found = remote_loads(path.read_text(encoding="utf-8", errors="replace"), css=path.suffix == ".css")
        if found:
            remote[str(path.relative_to(site))] = found
    assert not remote, f"pages that load from the network: {remote}"


def test_every_page_uses_the_local_katex_and_its_files_are_there(site):
    for page in nav_pages():
        built = site / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        text = built.read_text(encoding="utf-8")
        for asset in ("assets/katex/katex.min.js", "assets/katex/contrib/auto-render.min.js",
                      "assets/katex-render.js", "assets/katex/katex.min.css"):
            assert asset in text, f"{page} does not load {asset}"
    katex = site / "assets" / "katex"
    for font in re.findall(r"url\((fonts/[^)]+\.woff2)\)", (katex / "katex.min.css").read_text(encoding="utf-8")):
        assert (katex / font).is_file(), font


def formulas(page_html):
    """The TeX of every formula arithmatex marked on a built page: ``(tex, display)``."""
    found = []
    for tag, body in re.findall(r'<(span|div) class="arithmatex">(.*?)</\1>', page_html, re.S):
        tex = html.unescape(body).strip()
        opening, closing = (r"\[", r"\]") if tag == "div" else (r"\(", r"\)")
        assert tex.startswith(opening) and tex.endswith(closing), tex
        found.append((tex[2:-2], tag == "div"))
    return found


def test_the_derivations_are_formulas_and_code_is_coloured_at_build_time(site):
    bptt = (site / "bptt" / "index.html").read_text(encoding="utf-8")
    tex = [t for t, _ in formulas(bptt)]
    assert any(r"dW_{hh} = \sum_t h_{t-1}^\top da_t" in t for t in tex)
    assert any(r"da_t &= dh_t \odot (1 - h_t^2)" in t for t in tex)
    assert sum(display for _, display in formulas(bptt)) >= 4
    assert formulas((site / "engine" / "index.html").read_text(encoding="utf-8"))
    # Pygments has split the code into coloured tokens; no script colours it in the browser
    assert re.search(r'<div class="[^"]*\bhighlight\b[^"]*"><pre>.*?<span class="kn">import</span>', bptt, re.S)
    assert "highlight.js" not in bptt and "hljs" not in bptt


def test_every_formula_is_valid_for_katex(site):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the formulas are checked where it is")
    tex = sorted({f for page in site.rglob("*.html") for f in formulas(page.read_text(encoding="utf-8"))})
    assert len(tex) >= 10
    script = ("const katex = require(process.argv[1]); const bad = [];"
              "for (const [tex, display] of JSON.parse(require('fs').readFileSync(0, 'utf8'))) {"
              "  try { katex.renderToString(tex, {displayMode: display, throwOnError: true}); }"
              "  catch (e) { bad.push(tex + ': ' + e.message); } }"
              "console.log(JSON.stringify(bad));")
    run = subprocess.run([node, "-e", script, str(DOCS / "assets" / "katex" / "katex.min.js")],
                         input=json.dumps(tex), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [], "formulas KaTeX cannot typeset"


def test_the_api_page_has_an_entry_for_every_public_name(site):
    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    public = {key for *_, key in reference.PUBLIC}
    expected = {anchor for anchor, key in reference.reference_anchors().items() if key in public}
    assert "tinygrad_rnn.tensor.Tensor.__matmul__" in expected
    missing = sorted(expected - ids)
    assert not missing, f"docs/api.md should document these, but the built page has no entry: {missing}"
    # the constructor's signature is shown on the class
    tensor = page[page.index('id="tinygrad_rnn.tensor.Tensor"'):]
    assert re.search(r"requires_grad.*?dtype.*?name", html.unescape(re.sub(r"<[^>]+>", "", tensor[:4000])), re.S)
