"""The rendered book links correctly once published: launch, repository and download buttons of every chapter.

The book is built here without executing the chapters (`execute_notebooks: "off"`: the pages render the outputs
stored in the notebooks), which takes well under two minutes, into a temporary folder, so this test neither needs
nor disturbs the full build of tests/test_book.py. The build reads a temporary copy of `_config.yml` that differs
only in that one key; it is written into the repository root because `local_extensions` paths are relative to the
configuration file, and deleted afterwards (its name matches `_config.*.tmp.yml`, which git ignores, should a
killed run leave it behind).

The expected links are computed here from `_config.yml` (read with a YAML parser) and checked on the built HTML:
- "Launch on Colab": `{colab_url}/github/{owner}/{repo}/blob/{branch}/{path_to_book}book/NN_name.ipynb`, one per
  chapter page, pointing at a notebook that exists at that path in the repository, on the branch CI deploys from;
- the repository button: `repository.url`;
- the download button: the chapter's `.ipynb`, the same notebook as the source."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

from _repo import ROOT, chapter_notebooks


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


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


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("launch_links")
    config = _config()
    assert "execute" in config and "execute_notebooks" in config["execute"], "_config.yml has no execute.execute_notebooks"
    config["execute"]["execute_notebooks"] = "off"
    temporary = ROOT / f"_config.{uuid.uuid4().hex[:12]}.tmp.yml"
    try:
        temporary.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        exe = pathlib.Path(sys.executable).parent / "jupyter-book"
        cmd = [str(exe), "build", str(ROOT), "--config", str(temporary), "--path-output", str(out), "--all",
               "-W", "-n", "--keep-going"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        temporary.unlink(missing_ok=True)
    assert proc.returncode == 0, "the book (without execution) failed to build:\n" + (proc.stdout + proc.stderr)[-4000:]
    return out / "_build" / "html"


def test_the_repository_settings_name_a_github_repository_and_the_deployed_branch():
    repo = _config()["repository"]
    parts = urlsplit(repo["url"])
    assert parts.scheme == "https" and parts.netloc == "github.com" and len(parts.path.strip("/").split("/")) == 2, (
        f"repository.url must be https://github.com/<owner>/<repo>, not {repo['url']!r}: Colab opens GitHub paths")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    on = workflow.get("on", workflow.get(True))
    assert on["push"]["branches"] == [repo["branch"]], "the launch buttons must open the branch CI deploys from"


@pytest.mark.parametrize("nb", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_page_links_to_colab_the_repository_and_its_notebook(html, nb):
    config = _config()
    repo, colab = config["repository"], config["launch_buttons"]["colab_url"].rstrip("/")
    owner_repo = urlsplit(repo["url"]).path.strip("/")
    path_in_repo = f"{repo.get('path_to_book', '') or ''}".strip("/")
    notebook_path = "/".join(p for p in (path_in_repo, "book", nb.name) if p)
    assert (ROOT / notebook_path).resolve() == nb.resolve(), f"{notebook_path} is not the chapter's path in the repository"

    page = html / "book" / f"{nb.stem}.html"
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
