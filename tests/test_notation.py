"""One symbol, one meaning (book/notation.md). Four symbols had drifted between chapters: κ (a condition number
and a curvature), μ (a Hessian eigenvalue and the EGR strength), bare λ (Hessian eigenvalues and hm/4) and ρ (a
rate and the SAM radius). This test flags them wherever they appear outside the chapters that use them in their
defined meaning, and flags the patterns of the old misuses everywhere. A new use in another chapter fails on
purpose: check that it means what notation.md says, then add the chapter here."""

from __future__ import annotations

import re

import pytest

from _repo import cell_source, chapter_notebooks, load_notebook

CHAPTERS = chapter_notebooks()

# symbol -> (pattern in markdown math or code text, chapters using it in its defined meaning, the meaning)
SYMBOLS = {
    "κ": (r"\\kappa|κ", {"03", "04", "05", "07", "09"},
          "the curvature along one Hessian eigendirection (E = ½κθ² on a line)"),
    "μ": (r"\\mu(?![a-zA-Z])|μ", {"03", "06", "07", "09"}, "the strength of explicit gradient regularization"),
    "ρ": (r"\\rho(?![a-zA-Z])|ρ", {"07", "09"}, "the radius of sharpness-aware minimization"),
    "bare λ": (r"\\lambda(?![a-zA-Z_])|λ(?![_₀-₉ᵢ])", {"03", "04", "06"}, "the regularization strength hm/4"),
}

# Misuses that are wrong in any chapter, whatever its list above.
MISUSES = {
    "h·λ with a bare λ (a stability product needs an eigenvalue: λ_max, λ_i or κ)": r"h\s*\\lambda(?![a-zA-Z_])|hλ(?![_₀-₉ᵢ])",
    "a quadratic's coefficient written λ (use κ)": r"\\tfrac\{\\lambda\}|\\tfrac12\s*\\lambda(?![a-zA-Z_])|\\frac\{\\lambda\}",
    "an eigenvalue called μ": r"eigenvalues?\s+\$\\mu|eigenvalue\s+μ",
    "a condition number called κ": r"condition number[^.]{0,40}(\\kappa|κ)|(\\kappa|κ)[^.]{0,20}condition number",
    "a rate called ρ": r"rate[^.]{0,20}\$\\rho|\\rho\(h\)",
}


def _text(nb: dict) -> str:
    """Markdown and code (with its strings and comments) of a notebook, never its outputs."""
    return "\n".join(cell_source(c) for c in nb["cells"] if c["cell_type"] in ("markdown", "code"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_symbols_only_where_they_mean_what_notation_md_says(path):
    chapter, text = path.stem[:2], _text(load_notebook(path))
    for symbol, (pattern, allowed, meaning) in SYMBOLS.items():
        if chapter in allowed:
            continue
        hits = [text[max(0, m.start() - 50):m.end() + 30].replace("\n", " ") for m in re.finditer(pattern, text)]
        assert not hits, (f"{path.name} uses {symbol}, which notation.md reserves for {meaning}: "
                          f"{len(hits)} times, e.g. …{hits[0]}…")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_old_misuse_of_the_four_symbols(path):
    text = _text(load_notebook(path))
    for what, pattern in MISUSES.items():
        m = re.search(pattern, text)
        assert m is None, f"{path.name}: {what}: …{text[max(0, m.start() - 50):m.end() + 30]}…"


def test_notation_page_defines_each_symbol_once():
    from _repo import BOOK

    table = (BOOK / "notation.md").read_text()
    for latex in (r"$\kappa$", r"$\mu$", r"$\rho$", r"$\lambda = \frac{hm}{4}$", r"$\tau = h/B$"):
        assert table.count(f"| {latex}") == 1, f"notation.md must define {latex} in exactly one row"
