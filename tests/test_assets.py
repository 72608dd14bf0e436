"""The book's own MathJax, require.js and widget manager (book/_ext/book_assets.py): pinned, verified, complete."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pytest

from _repo import ROOT

sys.path.insert(0, str(ROOT / "book" / "_ext"))
import book_assets as assets  # noqa: E402  (the Sphinx extension, as the build loads it)


def test_pins_are_exact_versions_with_sha512_integrity():
    for package in assets.PACKAGES:
        assert package.version.count(".") == 2 and package.version.replace(".", "").isdigit(), package
        assert package.integrity.startswith("sha512-") and len(package.integrity) == 95, package
    assert assets.MATHJAX.version.startswith("3.") and assets.REQUIREJS.version.startswith("2.")
    assert assets.HTML_MANAGER.version.startswith("1."), "ipywidgets 8 state needs @jupyter-widgets/html-manager 1.x"


def test_only_the_files_the_pages_load_are_kept():
    keep = lambda package, path: assets._wanted(package, path)  # noqa: E731
    assert keep(assets.MATHJAX, "es5/tex-mml-chtml.js")
    assert keep(assets.MATHJAX, "es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff")
    assert keep(assets.MATHJAX, "es5/input/tex/extensions/physics.js")
    assert not keep(assets.MATHJAX, "es5/tex-svg-full.js") and not keep(assets.MATHJAX, "es5/output/svg/fonts/tex.js")
    assert keep(assets.HTML_MANAGER, "dist/embed-amd.js") and not keep(assets.HTML_MANAGER, "dist/embed.js.map")
    assert keep(assets.REQUIREJS, "require.js") and not keep(assets.REQUIREJS, "bin/r.js")


def test_missing_npm_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    with pytest.raises(assets.AssetError, match="npm is not installed"):
        assets.npm_pack(assets.REQUIREJS, None)


def test_offline_check_of_an_empty_cache_fails_and_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("IGR_TUTORIAL_CACHE", str(tmp_path))
    with pytest.raises(assets.AssetError, match="python book/_ext/book_assets.py"):
        assets.ensure_assets(offline=True)


@pytest.mark.network
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm and the npm registry")
def test_a_tarball_with_another_digest_is_refused(tmp_path):
    wrong = dataclasses.replace(assets.REQUIREJS, integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(assets.AssetError, match="discarded"):
        assets.npm_pack(wrong, tmp_path)


@pytest.mark.network
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm and the npm registry")
def test_fetched_files_verify_and_a_changed_file_is_detected(monkeypatch, tmp_path):
    static = assets.ensure_assets()  # the real cache: fetched once, as the book build does
    for path in (assets.MATHJAX_PATH, assets.REQUIREJS_PATH, assets.WIDGETS_EMBED_PATH):
        assert (static / path).is_file()
    copy = tmp_path / assets.asset_root().name
    shutil.copytree(assets.asset_root(), copy)
    monkeypatch.setenv("IGR_TUTORIAL_CACHE", str(tmp_path))
    assert assets._verify(copy) == []
    target = copy / "static" / assets.REQUIREJS_PATH
    target.write_text(target.read_text() + "\n// changed")
    assert assets._verify(copy) == [f"changed: {assets.REQUIREJS.folder}/require.js"]
    manifest = json.loads((copy / "manifest.json").read_text())
    assert set(manifest["packages"]) == {p.folder for p in assets.PACKAGES}


def test_the_compile_cache_extension_sets_jax_variables_unless_the_reader_has_a_cache(tmp_path):
    """book/_ext/book_compile_cache.py: the build's kernels get one cache directory; a reader's own wins."""
    from book_compile_cache import compile_cache_environment

    added = compile_cache_environment(tmp_path, {})
    assert added["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path)
    assert added["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert compile_cache_environment(tmp_path, {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}) == {}
    kept = compile_cache_environment(tmp_path, {"JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "1000"})
    assert "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in kept
