"""The whole book builds with warnings as errors (`-W -n --keep-going`), and the built book is what readers
should get.

The suite executes each chapter once: tests/test_colab.py runs every chapter under nbval (a fresh execution,
compared with the stored outputs), so this build renders the chapters from those stored outputs
(`nb_execution_excludepatterns`) and executes only the other notebook pages (the Performance page and the
instructor guide). It uses the book's own `_config.yml`, with that one change, through a temporary copy beside it
(the extensions' paths are relative to the configuration file). The README's first command executes everything.

The build goes to `_build/html`, the same place as the README's first command, with `--all` so that no
page is skipped as unchanged (a skipped page would hide its warnings). The same build is then checked as
files (links, alt text, nothing loaded from a CDN, the status page) and in a real browser: headless Chromium
(installed with apt-get when missing) opens every chapter page from disk, with no network, and checks the
math, figures, buttons, boxes, sliders and dark mode. Screenshots of every chapter page go to
`_build/screenshots/`. The browser checks live in this file so that they use this file's build: test files
may run in different pytest-xdist workers."""

from __future__ import annotations

import html
import importlib.metadata
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

from _browser import Browser, install_chromium
from _repo import ROOT, book_config, book_environment, chapter_notebooks, toc_files

HTML = ROOT / "_build" / "html"

# The build fetches the pinned web assets with npm when they are not cached, and the browser checks install
# Chromium with apt-get when it is missing.
pytestmark = [pytest.mark.slow, pytest.mark.network]


#: Notebooks the suite's build renders from their stored outputs: the chapters, which nbval executes.
STORED_OUTPUTS = ["book/0*.ipynb"]


def stored_outputs_config() -> str:
    """`_config.yml` with the chapters excluded from execution, every other setting unchanged."""
    config = book_config()
    assert config["execute"]["execute_notebooks"] == "cache", "book_parallel_execution executes in cache mode"
    assert "book_parallel_execution" in config["sphinx"]["local_extensions"], "the README's build must execute every notebook"
    config["execute"]["exclude_patterns"] = STORED_OUTPUTS
    return yaml.safe_dump(config, sort_keys=False)


def _venv_named_venv() -> pathlib.Path | None:
    """A virtual environment named `venv` in the repository, as many readers make one, whose site-packages holds
    a package with a README and a LICENSE (the files Sphinx would collect as pages if the build looked there).
    Returns it, to be removed after the build, or None when the repository already has a `venv`."""
    import venv

    root = ROOT / "venv"
    if root.exists():
        return None
    venv.EnvBuilder(with_pip=False).create(root)
    (site,) = root.glob("lib/python*/site-packages")
    (site / "somepackage").mkdir()
    for name in ("README.md", "LICENSE.md", "index.ipynb"):
        (site / "somepackage" / name).write_text("# A page the book must not collect\n")
    return root


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    exe = pathlib.Path(sys.executable).parent / "jupyter-book"
    config = ROOT / f"_config.suite-{tmp_path_factory.getbasetemp().name}.yml"  # beside _config.yml; removed below
    config.write_text(stored_outputs_config())
    decoy = _venv_named_venv()
    try:
        cmd = [str(exe), "build", str(ROOT), "--config", str(config), "--all", "-W", "-n", "--keep-going"]
        # the build's own compile cache and XLA flags (not the suite's TEST_XLA_FLAGS)
        env = {k: v for k, v in book_environment(os.environ).items() if k != "JAX_COMPILATION_CACHE_DIR"}
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    finally:
        config.unlink()
        if decoy:
            shutil.rmtree(decoy)
    log = proc.stdout + proc.stderr
    return proc.returncode, log


def test_book_builds_with_warnings_as_errors(build):
    code, log = build
    # Sphinx's own diagnostics ("path:line: WARNING: …"); the kernels' "[IPKernelApp] WARNING | …" start-up
    # notes about local TCP transport are not about the book.
    warnings = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL):", line)]
    assert code == 0 and not warnings, "book build failed:\n" + "\n".join(warnings[-30:]) + "\n" + log[-3000:]


def test_every_page_is_built(build):
    for entry in toc_files():
        assert (HTML / f"{entry}.html").exists(), f"{entry}.html missing from the build"
    # The build ran with a virtual environment named `venv` in the repository (unless one was there already):
    # nothing of it, nor of any site-packages, became a page.
    leaked = [p for p in HTML.rglob("*") if p.name in ("venv", ".venv", "site-packages", "somepackage")]
    assert not leaked, f"the build collected a virtual environment's files: {leaked[:5]}"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_page_shows_figures_exercises_and_colab_link(build, nb):
    page = (HTML / "book" / f"{nb.stem}.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', page)
    figures = [src for src in images if "_images/" in src]
    assert len(figures) >= 2, f"{nb.stem}: the built page shows {len(figures)} figures"
    for src in figures:
        assert (HTML / "book" / html.unescape(src)).resolve().exists(), f"{nb.stem}: broken image {src}"
    assert "exercise admonition" in page, f"{nb.stem}: exercises not rendered"


# --- The built HTML, read as files: links, alt text, no resource from a CDN, the status page -----------------

# Hosts the book may link to. A link to any other host fails the test on purpose: add the host here once the
# link has been checked by hand (the test itself has no network).
ALLOWED_LINK_HOSTS = {
    "colab.research.google.com",  # launch buttons
    "github.com",  # repository button, source links
    "openreview.net",  # the paper (Barrett & Dherin, ICLR 2021)
    "arxiv.org",
    "doi.org",
    "proceedings.mlr.press",
    "proceedings.neurips.cc",
    "docs.jax.dev",
    "jax.readthedocs.io",
    "numpy.org",
    "matplotlib.org",
    "ipywidgets.readthedocs.io",
    "jupyterbook.org",
    "otter-grader.readthedocs.io",  # the grader the instructor guide uses
}


class _Tags(HTMLParser):
    """The tags of one page that matter here: links, resources, images (inside the article or not), ids."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)
        self.images: list[dict] = []
        self.ids: set[str] = set()
        self._article_depth = 0
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append((tag, key, a[key]))
        if tag in ("img", "input", "br", "hr", "meta", "link", "source", "area", "wbr", "col", "embed"):
            if tag == "img":
                self.images.append({**a, "in_article": self._article_depth > 0})
            return
        self._depth += 1
        if tag == "article" and self._article_depth == 0:
            self._article_depth = self._depth

    def handle_endtag(self, tag):
        if tag in ("img", "input", "br", "hr", "meta", "link", "source", "area", "wbr", "col", "embed"):
            return
        if tag == "article" and self._article_depth == self._depth:
            self._article_depth = 0
        self._depth -= 1


def _parse(path: pathlib.Path) -> _Tags:
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def built_pages(build):
    # The pages Sphinx writes (not _static/, _sources/, nor leftovers in hidden folders of old builds).
    pages = sorted(p for p in HTML.rglob("*.html") if not p.relative_to(HTML).parts[0].startswith(("_", ".")))
    assert pages, f"no HTML pages under {HTML}"
    return {p.resolve(): _parse(p) for p in pages}


def test_every_internal_link_resolves(built_pages):
    broken = []
    for page, tags in built_pages.items():
        for tag, attr, url in tags.links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            where = f"{page.relative_to(HTML.resolve())}: <{tag} {attr}={url!r}>"
            if not target.exists():
                broken.append(f"{where}: no such file")
            elif parts.fragment and target in built_pages and unquote(parts.fragment) not in built_pages[target].ids:
                broken.append(f"{where}: no element with that id")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:30])


def test_external_links_are_https_to_known_hosts_and_no_resource_is_remote(built_pages):
    problems = []
    for page, tags in built_pages.items():
        for tag, attr, url in tags.links:
            parts = urlsplit(url)
            if not parts.scheme or parts.scheme in ("data", "mailto"):
                continue
            where = f"{page.relative_to(HTML.resolve())}: <{tag} {attr}={url[:100]!r}>"
            if tag != "a":
                problems.append(f"{where}: pages must load every script, style sheet and image from the book itself")
            elif parts.scheme != "https" or not parts.hostname or " " in url:
                problems.append(f"{where}: not a well-formed https link")
            elif parts.hostname not in ALLOWED_LINK_HOSTS:
                problems.append(f"{where}: host {parts.hostname} is not in ALLOWED_LINK_HOSTS")
    assert not problems, "\n".join(problems[:30])


def test_every_image_in_the_content_has_alt_text(built_pages):
    missing = []
    for page, tags in built_pages.items():
        for img in tags.images:
            if img["in_article"] and not (img.get("alt") or "").strip():
                what = img.get("id") or (img.get("src") or "")[:80]
                missing.append(f"{page.relative_to(HTML.resolve())}: <img {what}>")
    assert not missing, (
        "images without alt text (a figure's alt goes in the cell metadata, mystnb.image.alt; an animation "
        "frame needs one on its <img>):\n" + "\n".join(missing)
    )


def test_status_page_reports_this_build(build):
    page = HTML / "book" / "status.html"
    assert page.exists(), "book/status.html was not built"
    raw = page.read_text(encoding="utf-8")
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))
    assert 'class="igr-build-status igr-exec-times' in raw, "status page: no table of execution times"
    table = raw[raw.index("igr-exec-times") :]
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        row = re.search(rf'href="{re.escape(nb.stem)}\.html.*?</tr>', table, re.S)
        seconds = row and re.search(r"<p>(\d+\.\d)</p>", row.group(0))
        assert seconds and "<p>ok</p>" in row.group(0), f"status page: no execution time for {nb.stem}"
        # The chapters come from their stored outputs (nbval executes them); the other pages from this build.
        how = "stored outputs, executed 20" if nb.name.startswith("0") else "this build ("
        assert how in row.group(0), f"status page: {nb.stem} should say it was executed by {how!r}"
    assert "The test suite checks stored outputs against a fresh execution" in text
    for dist in ("jax", "jaxlib", "numpy", "jupyter-book"):
        assert f" {dist} {importlib.metadata.version(dist)} " in text, f"status page: {dist} version missing"
    assert re.search(r"Device (CPU|GPU|TPU)", text), "status page: the device is missing"


def test_the_suite_build_changes_only_which_notebooks_execute():
    """The suite's configuration is the README build's, with the chapters excluded from execution."""
    readme_build, suite_build = book_config(), yaml.safe_load(stored_outputs_config())
    assert suite_build["execute"].pop("exclude_patterns") == STORED_OUTPUTS
    assert "exclude_patterns" not in readme_build["execute"] and suite_build == readme_build
    chapters = chapter_notebooks()
    assert chapters and all(pathlib.PurePosixPath(nb.relative_to(ROOT).as_posix()).match(STORED_OUTPUTS[0]) for nb in chapters)
    others = [nb for nb in (ROOT / "book").glob("*.ipynb") if nb not in chapters]
    assert others and not any(pathlib.PurePosixPath(nb.relative_to(ROOT).as_posix()).match(STORED_OUTPUTS[0]) for nb in others)


# --- The rendered book links correctly once published: launch, repository and download buttons ---------------
# The expected links are computed from `_config.yml` (read with a YAML parser) and checked on the built HTML:
# - "Launch on Colab": `{colab_url}/github/{owner}/{repo}/blob/{branch}/{path_to_book}book/NN_name.ipynb`, one per
#   chapter page, pointing at a notebook that exists at that path in the repository, on the branch CI deploys from;
# - the repository button: `repository.url`;
# - the download button: the chapter's `.ipynb`, the same notebook as the source.

class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.anchors.append({k: v or "" for k, v in attrs})


def _anchors(page: pathlib.Path) -> list[dict[str, str]]:
    parser = _Links()
    parser.feed(page.read_text())
    return parser.anchors


def test_the_repository_settings_name_a_github_repository_and_the_deployed_branch():
    repo = book_config()["repository"]
    parts = urlsplit(repo["url"])
    assert parts.scheme == "https" and parts.netloc == "github.com" and len(parts.path.strip("/").split("/")) == 2, (
        f"repository.url must be https://github.com/<owner>/<repo>, not {repo['url']!r}: Colab opens GitHub paths")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    on = workflow.get("on", workflow.get(True))
    assert on["push"]["branches"] == [repo["branch"]], "the launch buttons must open the branch CI deploys from"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_page_links_to_colab_the_repository_and_its_notebook(build, nb):
    config = book_config()
    repo, colab = config["repository"], config["launch_buttons"]["colab_url"].rstrip("/")
    owner_repo = urlsplit(repo["url"]).path.strip("/")
    path_in_repo = f"{repo.get('path_to_book', '') or ''}".strip("/")
    notebook_path = "/".join(p for p in (path_in_repo, "book", nb.name) if p)
    assert (ROOT / notebook_path).resolve() == nb.resolve(), f"{notebook_path} is not the chapter's path in the repository"

    page = HTML / "book" / f"{nb.stem}.html"
    anchors = _anchors(page)

    launches = [a["href"] for a in anchors if a.get("href", "").startswith(colab)]
    expected = f"{colab}/github/{owner_repo}/blob/{repo['branch']}/{notebook_path}"
    assert launches == [expected], f"{page.name}: Colab launch links {launches}, expected [{expected!r}]"

    repository = [a["href"] for a in anchors if "btn-source-repository-button" in a.get("class", "")]
    assert repository == [repo["url"]], f"{page.name}: repository button {repository}, expected {repo['url']!r}"

    downloads = [a["href"] for a in anchors if "btn-download-source-button" in a.get("class", "")]
    assert len(downloads) == 1 and downloads[0].endswith(f"/{nb.name}"), f"{page.name}: download button {downloads}"
    target = pathlib.Path(urlsplit(urljoin(page.as_uri(), downloads[0])).path)
    assert target.is_file(), f"{page.name}: the download button points at {target}, which the build did not write"
    assert json.loads(target.read_text())["cells"] == json.loads(nb.read_text())["cells"], (
        f"{page.name}: the downloadable notebook is not the chapter's notebook")


# --- The book as readers see it: every chapter page in a real browser (headless Chromium) ------------------------

SCREENSHOTS = ROOT / "_build" / "screenshots"

# After MathJax has typeset and every image has loaded: what the reader gets.
_INSPECT = r"""
(() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container').forEach(e => e.remove());
  const text = clone.textContent;
  const math = [...document.querySelectorAll('span.math, div.math')];
  const visible = e => e.offsetWidth > 0 && e.offsetHeight > 0;
  return {
    rawTex: ['\\(', '\\)', '\\[', '\\]', '\\begin{'].filter(d => text.includes(d)),
    math: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container')).length,
    mjxErrors: document.querySelectorAll('mjx-merror').length,
    images: [...document.images].map(img => ({src: img.currentSrc.slice(0, 120), width: img.naturalWidth,
                                               widget: !!img.closest('.jupyter-widgets'),
                                               inArticle: !!img.closest('article'), alt: img.alt})),
    colab: [...document.querySelectorAll('a[href*="colab.research.google.com"]')].map(a => a.href),
    download: [...document.querySelectorAll('a.btn-download-source-button')].map(a => a.getAttribute('href')),
    proofs: [...document.querySelectorAll('div.proof')].filter(visible).length,
    theoremTitles: [...document.querySelectorAll('div.proof')]
                     .filter(d => [...d.classList].some(c => !['proof', 'admonition', 'dropdown'].includes(c)))
                     .map(d => (d.querySelector('.admonition-title') || {textContent: ''}).textContent.trim()),
    exercises: [...document.querySelectorAll('div.exercise')].filter(visible).length,
    exerciseTitles: [...document.querySelectorAll('div.exercise .admonition-title')].filter(visible).length,
    exerciseTitleTexts: [...document.querySelectorAll('div.exercise .admonition-title')].map(e => e.textContent.trim()),
    solutions: document.querySelectorAll('div.solution').length,
    widgetSliders: document.querySelectorAll('.jupyter-widgets .widget-slider, .widget-slider.jupyter-widgets').length,
    pageHeight: document.documentElement.scrollHeight,
  };
})()
"""

# Every matplotlib to_jshtml() slider: move it to its last frame; the displayed frame must change.
_MOVE_SLIDERS = r"""
(async () => {
  const out = [];
  for (const slider of document.querySelectorAll('input.anim-slider')) {
    const img = document.getElementById(slider.id.replace('_anim_slider', '_anim_img'));
    const before = img.src, last = parseInt(slider.max);
    slider.value = String(last);
    slider.dispatchEvent(new Event('input', {bubbles: true}));
    await new Promise(r => setTimeout(r, 50));
    if (img.decode) await img.decode().catch(() => null);
    out.push({frames: last + 1, changed: img.src !== before, width: img.naturalWidth});
    slider.value = '0';
    slider.dispatchEvent(new Event('input', {bubbles: true}));
  }
  return out;
})()
"""

# The theme's dark mode; how many figures the page shows, and the theme's attributes before (to restore them).
_DARK_MODE = r"""
(() => {
  const root = document.documentElement;
  const before = {theme: root.getAttribute('data-theme'), mode: root.getAttribute('data-mode')};
  root.dataset.theme = 'dark';
  root.dataset.mode = 'dark';
  const bg = getComputedStyle(document.body).backgroundColor.match(/\d+/g).map(Number);
  return {background: bg.slice(0, 3), figures: document.querySelectorAll('article img[src*="_images/"]').length,
          before};
})()
"""

# Put the theme's attributes back as they were (an argument: _DARK_MODE's `before`).
_RESTORE_THEME = r"""
(before => {
  for (const [name, value] of [['data-theme', before.theme], ['data-mode', before.mode]]) {
    if (value === null) document.documentElement.removeAttribute(name);
    else document.documentElement.setAttribute(name, value);
  }
})(%s)
"""

# Scroll figure i into the middle of the window and wait until it is painted there: its pixels decoded
# (`img.decode()`) and two frames drawn after the scroll. Without the wait, a capture under load once caught a figure
# as bare page background (Chromium had not rastered the newly scrolled region yet). Return where the figure is in
# the window, and the scroll offset.
_TWO_FRAMES = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
_SHOW_FIGURE = r"""
(async i => {
  const img = document.querySelectorAll('article img[src*="_images/"]')[i];
  img.scrollIntoView({block: 'center'});
  await img.decode();
  await """ + _TWO_FRAMES + r""";
  const r = img.getBoundingClientRect();
  return {x: r.left, y: r.top, width: r.width, height: r.height, scrollX: window.scrollX, scrollY: window.scrollY};
})(%d)
"""


def _figure_in_dark_mode(browser: Browser, index: int, path: pathlib.Path) -> float:
    """Capture figure ``index`` as the window shows it (its part inside the window) and save it. Return the share
    of white-ish pixels (light and grey: the theme dims images in dark mode) in the figure's outer band, just
    inside the theme's 0.5rem padding: a figure's own background, which must stay opaque white on a dark page."""
    import numpy as np
    from PIL import Image

    rect = browser.evaluate(_SHOW_FIGURE % index)
    x0, y0 = max(0, round(rect["x"])), max(0, round(rect["y"]))
    x1 = min(browser.width, round(rect["x"] + rect["width"]))
    y1 = min(browser.height, round(rect["y"] + rect["height"]))
    # Only the figure's rectangle is captured (clip, in page coordinates): the same pixels as a crop of the
    # window's screenshot, for about half of Chromium's time.
    clip = {"x": x0 + rect["scrollX"], "y": y0 + rect["scrollY"], "width": x1 - x0, "height": y1 - y0}
    for _ in range(3):  # a figure is never one flat colour: such a capture is a region not painted yet
        figure = Image.open(io.BytesIO(browser.screenshot_bytes(clip))).convert("RGB")
        px = np.asarray(figure, dtype=np.int16)
        if px.size and np.ptp(px) > 0:
            break
        browser.evaluate(_TWO_FRAMES)
    figure.save(path)
    outer, inner = 10, 18  # px from the edge: past the padding, into the figure's margin
    band = np.zeros(px.shape[:2], dtype=bool)
    band[outer:-outer, outer:-outer] = True
    band[inner:-inner, inner:-inner] = False
    px = px[band]
    light = (px.min(axis=1) >= 190) & (px.max(axis=1) - px.min(axis=1) <= 24)
    return float(light.mean()) if light.size else 0.0


def _visit(browser: Browser, stem: str) -> dict:
    page = browser.open((HTML / "book" / f"{stem}.html").as_uri())
    page.update(browser.evaluate(_INSPECT))
    page["sliders"] = browser.evaluate(_MOVE_SLIDERS)
    page["screenshot"] = SCREENSHOTS / f"{stem}.jpg"  # taken last, below
    dark = browser.evaluate(_DARK_MODE)
    page["dark_background"] = dark["background"]
    page["dark_figures"] = []
    for i in range(dark["figures"]):
        path = SCREENSHOTS / f"{stem}-dark-figure{i + 1}.png"
        page["dark_figures"].append((path.name, _figure_in_dark_mode(browser, i, path)))
    browser.evaluate(_RESTORE_THEME % json.dumps(dark["before"]))
    # Last, in the light theme the reader gets: the whole page at half scale, an overview (the figures above are
    # saved at full size). The page is left afterwards, so it is laid out at its full height only once.
    browser.screenshot(page["screenshot"], scale=0.5)
    return page


@pytest.fixture(scope="module")
def browser(build, tmp_path_factory):
    assert (HTML / "index.html").exists(), "the book was not built, nothing to open in a browser"
    chromium = install_chromium()  # apt-get install -y chromium when missing
    b = Browser(chromium, tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def pages(browser):
    """Every chapter page, opened once: what the browser saw, after the checks' interactions."""
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return {nb.stem: _visit(browser, nb.stem) for nb in chapter_notebooks()}


def _directives(nb: pathlib.Path, pattern: str) -> int:
    md = "\n".join(
        "".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown"
    )
    return len(re.findall(r"^\s*(?:```+|:::+)\{" + pattern + r"\}", md, re.M))


def _notebook_outputs(nb: pathlib.Path) -> str:
    cells = json.loads(nb.read_text())["cells"]
    return "".join(
        "".join(out.get("data", {}).get("text/html", [])) for c in cells for out in c.get("outputs", [])
    )


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_browser_math_is_typeset_offline(pages, nb):
    page = pages[nb.stem]
    where = f"{nb.stem} (screenshot {page['screenshot']})"
    assert page["math"] > 0 and page["untypeset"] == 0, f"{where}: {page['untypeset']} of {page['math']} formulas not typeset"
    assert not page["rawTex"], f"{where}: raw TeX delimiters left in the page: {page['rawTex']}"
    assert page["mjxErrors"] == 0, f"{where}: {page['mjxErrors']} MathJax errors (red TeX)"
    remote = [u for u in page["requests"] if not u.startswith("file:")]
    assert not remote, f"{where}: the page requested {remote[:5]}: it must work without a network"
    assert not page["failed"], f"{where}: failed to load {page['failed'][:5]}"
    assert not page["errors"], f"{where}: JavaScript errors {page['errors'][:5]}"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_browser_figures_load(pages, nb):
    page = pages[nb.stem]
    broken = [img["src"] for img in page["images"] if img["width"] == 0]
    assert not broken, f"{nb.stem}: images that did not load: {broken} (screenshot {page['screenshot']})"
    assert sum("/_images/" in img["src"] for img in page["images"]) >= 2
    # What the reader's browser shows, widget outputs drawn by the html-manager included (the static check
    # test_every_image_in_the_content_has_alt_text cannot see those: they exist only after the page ran).
    no_alt = [img["src"][:60] for img in page["images"] if img["inArticle"] and not img["alt"].strip()]
    assert not no_alt, f"{nb.stem}: images shown without alt text: {no_alt} (interact callbacks: figure_with_alt)"
    if "widgets" in json.loads(nb.read_text())["metadata"]:
        assert any(img["widget"] and img["alt"].strip() for img in page["images"]), (
            f"{nb.stem}: the saved widget output shows no figure with alt text"
        )


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_browser_colab_and_download_buttons(pages, nb):
    page = pages[nb.stem]
    assert any(url.endswith(f"/blob/main/book/{nb.stem}.ipynb") for url in page["colab"]), (
        f"{nb.stem}: no Colab launch link to this chapter's notebook: {page['colab']}"
    )
    downloads = [h for h in page["download"] if h.split("?")[0].endswith(f"_sources/book/{nb.stem}.ipynb")]
    assert downloads, f"{nb.stem}: no download button for the .ipynb: {page['download']}"
    target = (HTML / "book" / downloads[0].split("?")[0]).resolve()
    assert target.exists(), f"{nb.stem}: the download button points at {target}, which was not built"
    assert json.loads(target.read_text())["cells"], f"{nb.stem}: the downloadable notebook has no cells"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_browser_theorem_and_exercise_boxes(pages, nb):
    page = pages[nb.stem]
    proofs = _directives(nb, r"prf:\w+")
    exercises = _directives(nb, r"exercise(?:-start)?")
    solutions = _directives(nb, r"solution(?:-start)?")
    where = f"{nb.stem} (screenshot {page['screenshot']})"
    assert page["proofs"] == proofs, f"{where}: {page['proofs']} theorem/proof boxes shown, {proofs} written"
    statements = proofs - _directives(nb, r"prf:proof")
    assert len(page["theoremTitles"]) == statements and all(page["theoremTitles"]), (
        f"{where}: {statements} theorem-like boxes written, shown with titles {page['theoremTitles']}"
    )
    assert page["exercises"] == exercises and page["exerciseTitles"] == exercises, (
        f"{where}: {page['exercises']} exercise boxes ({page['exerciseTitles']} titled) shown, {exercises} written"
    )
    assert page["solutions"] == solutions, f"{where}: {page['solutions']} solutions shown, {solutions} written"
    doubled = [t for t in page["exerciseTitleTexts"] if "((" in t]
    assert not doubled, f"{where}: exercise titles rendered with doubled parentheses: {doubled[:3]}"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_browser_kernel_free_sliders_and_saved_widgets(pages, nb):
    page = pages[nb.stem]
    animations = _notebook_outputs(nb).count('class="anim-slider"')
    assert len(page["sliders"]) == animations, f"{nb.stem}: {len(page['sliders'])} sliders shown, {animations} stored"
    for slider in page["sliders"]:
        assert slider["frames"] > 1 and slider["changed"] and slider["width"] > 0, (
            f"{nb.stem}: moving the slider did not change the frame: {slider}"
        )
    if "widgets" in json.loads(nb.read_text())["metadata"]:
        assert page["widgetSliders"] > 0, f"{nb.stem}: the saved ipywidgets state was not rendered"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_browser_figures_stay_white_in_dark_mode(pages, nb):
    page = pages[nb.stem]
    r, g, b = page["dark_background"]
    assert max(r, g, b) < 80, f"{nb.stem}: dark mode did not apply (page background {page['dark_background']})"
    assert page["dark_figures"], f"{nb.stem}: no figure found in dark mode"
    dim = [(name, round(frac, 2)) for name, frac in page["dark_figures"] if frac < 0.6]
    assert not dim, f"{nb.stem}: figures without an opaque light background in dark mode ({SCREENSHOTS}): {dim}"


def test_no_virtual_environment_is_ever_a_source_of_the_book():
    """A venv inside the repository, under any name, holds README and LICENSE files in site-packages, which
    Sphinx would collect ("document isn't included in any toctree"). The exclude patterns must cover them."""
    from sphinx.util.matching import Matcher

    patterns = book_config()["exclude_patterns"]
    match = Matcher(patterns)
    for path in ("venv/README.md", ".venv/lib/python3.11/site-packages/jax/README.md",
                 "myenv/lib/python3.11/site-packages/numpy/LICENSE.md",
                 "anything/lib/python3.11/site-packages/x/docs/index.ipynb", "env/README.rst"):
        assert match(path), f"{path} would be collected by the book build"
    for path in ("book/01_gradient_flow.ipynb", "book/index.md"):
        assert not match(path), f"{path} is a page of the book"
