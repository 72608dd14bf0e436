"""The book's own copies of MathJax, require.js and the ipywidgets HTML manager: no page loads a public CDN.

By default a Jupyter Book page loads MathJax, require.js and ``@jupyter-widgets/html-manager`` from public
CDNs, so on a machine without internet math shows as raw ``\\(...\\)`` and saved widgets show nothing. This
module fetches pinned versions of the three npm packages **at build time** and serves them from the built
book's ``_static/vendor/`` folder; nothing minified is committed to the repository.

* Each package is downloaded with ``npm pack NAME@VERSION`` (the npm client and its registry; npm also checks
  the tarball against the registry's integrity hash) and the tarball is checked against the ``sha512``
  integrity string pinned in :data:`PACKAGES` (the same value npm writes to ``package-lock.json``). A tarball
  whose digest differs is discarded and the build stops.
* Only the files the pages load are unpacked, into a cache folder (``$IGR_TUTORIAL_CACHE``, else
  ``~/.cache/igr_tutorial``; see :func:`cache_directory`), with a manifest of their
  SHA-256 digests. Every build re-checks the unpacked files against the manifest and fetches again on any
  difference.
* As a Sphinx extension (listed in ``_config.yml`` under ``sphinx.extra_extensions``) it fetches what is
  missing when the build starts and points Sphinx at the files: ``html_static_path``, ``mathjax_path`` and
  myst-nb's ``nb_ipywidgets_js``. If ``npm`` is not installed the build fails with a message saying so.

Command line (fetch and verify ahead of a build, e.g. before going offline)::

    python book/_ext/book_assets.py            # fetch what is missing, verify everything, print the folder
    python book/_ext/book_assets.py --offline  # verify only; fail if anything is missing
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fnmatch
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Iterator


class AssetError(RuntimeError):
    """The book's web assets could not be fetched or do not match their pinned digests."""


@dataclasses.dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package and the files of it that the built pages load.

    ``include``/``exclude`` are glob patterns on paths inside the package (without the tarball's
    ``package/`` prefix); a file is kept when it matches some ``include`` and no ``exclude``.
    """

    name: str
    version: str
    integrity: str  # npm's Subresource-Integrity string of the tarball: "sha512-<base64>"
    folder: str  # where the files go, under _static/vendor/
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage(
        "mathjax",
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "mathjax-3.2.2",
        # The combined TeX+MathML → CommonHTML component, its web fonts, and the components it may load on
        # demand (TeX extensions, the accessibility menu and speech rules).
        include=("LICENSE", "package.json", "es5/*"),
        exclude=(
            "es5/tex-chtml*.js", "es5/tex-svg*.js", "es5/tex-mml-svg.js", "es5/mml-*.js", "es5/node-main.js",
            "es5/output/svg*",
        ),
    ),
    NpmPackage(
        "requirejs",
        "2.3.7",
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        "requirejs-2.3.7",
        include=("package.json", "require.js"),
    ),
    NpmPackage(
        "@jupyter-widgets/html-manager",
        "1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        "html-manager-1.0.15",
        # embed-amd.js bundles base, controls and the output widget (everything ipywidgets 8 state needs)
        # and the fonts its CSS refers to; libembed-amd.js and embed.js duplicate it.
        include=("package.json", "dist/*"),
        exclude=("*.map", "dist/embed.js", "dist/libembed-amd.js"),
    ),
)

MATHJAX, REQUIREJS, HTML_MANAGER = PACKAGES

#: Paths, relative to the built book's ``_static`` folder, that the pages load.
MATHJAX_PATH = f"vendor/{MATHJAX.folder}/es5/tex-mml-chtml.js"
REQUIREJS_PATH = f"vendor/{REQUIREJS.folder}/require.js"
WIDGETS_EMBED_PATH = f"vendor/{HTML_MANAGER.folder}/dist/embed-amd.js"


def _key() -> str:
    """A short digest of the pins: a change of version or of the file lists gets a fresh folder."""
    text = json.dumps([dataclasses.astuple(p) for p in PACKAGES])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def asset_root() -> pathlib.Path:
    """The cache folder for this set of pins; its ``static`` subfolder becomes an ``html_static_path``."""
    return cache_directory() / f"book-assets-{_key()}"


def cache_directory() -> pathlib.Path:
    """``$IGR_TUTORIAL_CACHE``, else ``$XDG_CACHE_HOME/igr_tutorial``, else ``~/.cache/igr_tutorial``: the same folder
    as ``igr_tutorial.data.cache_directory`` (written out here: a Sphinx extension must not import the package,
    which would load JAX into the build process)."""
    if os.environ.get("IGR_TUTORIAL_CACHE"):
        return pathlib.Path(os.environ["IGR_TUTORIAL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "igr_tutorial"


def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _wanted(package: NpmPackage, path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pat) for pat in package.include) and not any(
        fnmatch.fnmatchcase(path, pat) for pat in package.exclude
    )


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            "npm is not installed, so the book's MathJax, require.js and ipywidgets files cannot be fetched "
            "(the book serves them itself instead of loading them from public CDNs). Install Node.js and npm "
            "(Debian/Ubuntu: `apt-get install -y npm`) and build again; with no network access, fetch them "
            "once beforehand with `python book/_ext/book_assets.py`."
        )
    return npm


def npm_pack(package: NpmPackage, directory: pathlib.Path) -> bytes:
    """Download ``package``'s tarball from the npm registry with ``npm pack`` and check its sha512."""
    cmd = [_npm(), "pack", package.spec, "--json", "--ignore-scripts", "--pack-destination", str(directory)]
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssetError(
            f"`npm pack {package.spec}` failed (exit {proc.returncode}); is the npm registry reachable?\n"
            + proc.stderr[-2000:]
        )
    try:
        (info,) = json.loads(proc.stdout)
        tarball = directory / info["filename"]
        data = tarball.read_bytes()
    except (ValueError, KeyError, OSError) as exc:
        raise AssetError(f"`npm pack {package.spec}` wrote no tarball I can find: {exc}\n{proc.stdout[-2000:]}")
    got = _sri(data)
    if got != package.integrity:
        raise AssetError(
            f"{package.spec}: the tarball from the npm registry has integrity {got}, but {package.integrity} "
            "is pinned in book/_ext/book_assets.py. It was discarded and nothing was cached."
        )
    return data


def _unpack(package: NpmPackage, data: bytes, target: pathlib.Path) -> dict[str, str]:
    """Write the wanted files of the tarball under ``target``; return their SHA-256 digests."""
    digests = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            path = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if not _wanted(package, path) or ".." in pathlib.PurePosixPath(path).parts:
                continue
            content = tar.extractfile(member).read()
            out = target / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(content)
            digests[f"{package.folder}/{path}"] = hashlib.sha256(content).hexdigest()
    if not digests:
        raise AssetError(f"{package.spec}: none of the files {package.include} is in the tarball.")
    return digests


def _verify(root: pathlib.Path) -> list[str]:
    """Problems with the unpacked files under ``root`` (missing manifest, missing or changed files)."""
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        return ["no manifest"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for package in PACKAGES:
        if manifest.get("packages", {}).get(package.folder) != package.integrity:
            problems.append(f"{package.spec} not recorded in the manifest")
    vendor = root / "static" / "vendor"
    for rel, digest in manifest.get("files", {}).items():
        path = vendor / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"changed: {rel}")
    for path in (MATHJAX_PATH, REQUIREJS_PATH, WIDGETS_EMBED_PATH):
        if not (root / "static" / path).is_file():
            problems.append(f"missing: {path}")
    return problems


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive lock, so that two builds running at once (e.g. test workers) do not fetch together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_assets(*, offline: bool = False, log=None) -> pathlib.Path:
    """Return the folder to add to ``html_static_path``, fetching and verifying the packages if needed.

    With ``offline=True`` nothing is fetched: missing or changed files raise :class:`AssetError`.
    """
    root = asset_root()
    with _locked(root.parent / f"{root.name}.lock"):
        problems = _verify(root)
        if not problems:
            return root / "static"
        if offline:
            raise AssetError(
                f"the book's web assets under {root} are not usable ({'; '.join(problems[:5])}); "
                "run `python book/_ext/book_assets.py` with access to the npm registry."
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            manifest = {"packages": {}, "files": {}}
            with tempfile.TemporaryDirectory() as download:
                for package in PACKAGES:
                    if log:
                        log(f"fetching {package.spec} from the npm registry (npm pack) ...")
                    data = npm_pack(package, pathlib.Path(download))
                    files = _unpack(package, data, staging / "static" / "vendor" / package.folder)
                    manifest["packages"][package.folder] = package.integrity
                    manifest["files"].update(files)
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        problems = _verify(root)
        if problems:  # pragma: no cover - only if the disk changed under us
            raise AssetError(f"the freshly unpacked web assets under {root} do not verify: {problems[:5]}")
        return root / "static"


# --- Sphinx extension ---------------------------------------------------------------------------------


def _configure(app, config) -> None:
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    try:
        static = ensure_assets(log=logger.info)
    except AssetError as exc:
        raise ExtensionError(f"book_assets: {exc}") from None
    config.html_static_path = [*config.html_static_path, str(static)]
    config.mathjax_path = MATHJAX_PATH
    # Loaded, in this order, on pages whose notebook holds widget state (myst-nb adds them per page).
    config.nb_ipywidgets_js = {REQUIREJS_PATH: {}, WIDGETS_EMBED_PATH: {}}


#: matplotlib's ``to_jshtml()`` output links Font Awesome 4 from a CDN for its play/step buttons. The theme
#: already ships Font Awesome (its ``fontawesome.js`` draws the same ``fa fa-*`` icons), and each button has
#: an ``aria-label``, so the link is dropped from the pages rather than left to fail offline.
_CDN_STYLESHEET = re.compile(
    r'<link\s+rel="stylesheet"\s+href="https://maxcdn\.bootstrapcdn\.com/font-awesome/[^"]*"\s*/?>\s*'
)

#: ipywidgets 8 typesets widget labels with the MathJax 2 call ``MathJax.Hub.Queue(["Typeset", Hub, el])``;
#: the book loads MathJax 3, which has no ``Hub``, so the call would throw. This forwards it to MathJax 3.
#: (Deferred scripts, MathJax among them, have run by DOMContentLoaded; widgets are drawn at ``load``.)
_MATHJAX2_SHIM = """document.addEventListener("DOMContentLoaded", function () {
  var mj = window.MathJax;
  if (!mj || mj.Hub || !mj.typesetPromise) return;
  mj.Hub = {Queue: function () {
    Array.prototype.forEach.call(arguments, function (cmd) {
      if (Array.isArray(cmd) && cmd[0] === "Typeset") {
        mj.startup.promise.then(function () { return mj.typesetPromise(cmd[2] ? [cmd[2]] : undefined); })
          .catch(function (err) { console.warn("MathJax typeset of a widget label failed", err); });
      }
    });
  }};
});"""


def _page_resources(app, pagename, templatename, context, doctree) -> None:
    body = context.get("body")
    if body and "maxcdn.bootstrapcdn.com" in body:
        context["body"] = _CDN_STYLESHEET.sub("", body)
    script_files = context.get("script_files")
    if not isinstance(script_files, list):
        return
    # Jupyter Book 1.x registers some inline scripts twice (sphinx-thebe's `const THEBE_JS_URL = …` among
    # them, which then throws "Identifier has already been declared"): keep the first of identical scripts.
    seen, unique = set(), []
    for js in script_files:
        key = (getattr(js, "filename", None) or "", tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    script_files[:] = unique
    scripts = [str(getattr(js, "filename", None) or "") for js in script_files]
    if not any(name.endswith(WIDGETS_EMBED_PATH) for name in scripts):
        return
    # The widget bundle's styles load their fonts relative to the AMD module path of
    # "@jupyter-widgets/html-manager/dist/…"; point that path at the copy in _static (before require.js loads).
    dist = context["pathto"](f"_static/vendor/{HTML_MANAGER.folder}/dist", 1)
    config = {"paths": {"@jupyter-widgets/html-manager/dist": dist}}
    app.add_js_file(None, body=f"var require = {json.dumps(config)};", priority=450)
    app.add_js_file(None, body=_MATHJAX2_SHIM, priority=450)


def setup(app):
    """Sphinx entry point: serve MathJax, require.js and the widget manager from ``_static/vendor/``."""
    # After myst-nb has registered nb_ipywidgets_js (config values exist once every extension is set up).
    app.connect("config-inited", _configure, priority=400)
    # After myst-nb has added the widget scripts to the page (its handler runs at the default priority).
    app.connect("html-page-context", _page_resources, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python book/_ext/book_assets.py",
        description="Fetch (npm pack), verify (pinned sha512) and unpack the book's MathJax, require.js and "
        "ipywidgets HTML manager into the cache folder the book build serves them from.",
    )
    parser.add_argument("--offline", action="store_true", help="verify only, fetch nothing")
    args = parser.parse_args(argv)
    try:
        static = ensure_assets(offline=args.offline, log=lambda m: print(m, file=sys.stderr))
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for package in PACKAGES:
        print(f"{package.spec:40s} {package.integrity[:30]}...  verified")
    print(static)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
