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
    # m is the parameter count: a summation index of the log(1 + Δ) series must be another letter.
    "m as a summation index (m counts parameters)": r"\\sum_\{m\s*(=|\\ge)|\(-1\)\^\{m\s*\+\s*1\}|\\Delta\^\{?m\b",
    # N counts training examples (notation.md); a mean over the data is 1/N Σ_{i=1}^N.
    "n as the number of training examples (use N)": r"\\frac\{1\}\{n\}\s*\\sum|\\sum_\{i\s*=\s*1\}\^\{?n\b|\$n\$ (data points|training|examples)",
}

# Where a symbol may index something other than its notation.md meaning, by chapter.
INDEXED = {
    # θ_n is the n-th iterate; θ_k indexes the steps of one epoch in chapter 8 only (k-th batch).
    "θ_k for an iterate (use θ_n)": (r"\\theta_k(?![a-zA-Z])|θ_k", {"08"}),
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


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_indices_only_where_they_mean_what_notation_md_says(path):
    chapter, text = path.stem[:2], _text(load_notebook(path))
    for what, (pattern, allowed) in INDEXED.items():
        if chapter in allowed:
            continue
        m = re.search(pattern, text)
        assert m is None, f"{path.name}: {what}: …{text[max(0, m.start() - 50):m.end() + 30]}…"


STATEMENT = re.compile(r"```\{prf:(?:theorem|proposition|lemma|corollary)\}.*?```\s*```\{prf:proof\}.*?```", re.S)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_proof_names_eigenvalues_as_its_statement_does(path):
    """A proposition that speaks of the curvature κ is not proved with eigenvalues λ_i (or the other way round)."""
    md = "\n".join(cell_source(c) for c in load_notebook(path)["cells"] if c["cell_type"] == "markdown")
    for block in STATEMENT.findall(md):
        statement, proof = block.split("```{prf:proof}", 1)
        for ours, other in ((r"\\kappa", r"\\lambda_i"), (r"\\lambda_i", r"\\kappa")):
            if re.search(ours, statement) and not re.search(other, statement):
                assert not re.search(other, proof), (
                    f"{path.name}: the statement names eigenvalues {ours.strip(chr(92))} but its proof uses "
                    f"{other.strip(chr(92))}: …{statement.strip()[:80]}…")


def test_the_package_writes_the_log_series_with_another_index():
    """The package's docstrings follow notation.md too: m counts parameters, not the terms of log(1 + Δ)."""
    from _repo import ROOT

    for path in sorted((ROOT / "igr_tutorial").glob("*.py")):
        text = path.read_text()
        bad = re.search(r"\(−1\)\^\{m\+1\}|Δᵐ|Σ_\{m[=≥]", text)
        assert bad is None, f"{path.name}: m as a summation index: …{text[max(0, bad.start() - 60):bad.end() + 20]}…"


@pytest.mark.parametrize("case, what", [
    (r"$h\tilde f_h = \sum_{m \ge 1}\frac{(-1)^{m+1}}{m}\Delta^m\theta_0$", "m as a summation index"),
    (r"the loss is $\frac{1}{n}\sum_{i=1}^{n} \ell_i$ over $n$ training examples", "n as the number of training"),
    (r"with $n$ data points", "n as the number of training"),
])
def test_the_misuse_patterns_catch_what_they_name(case, what):
    """Each pattern fails the text it was written for (so the chapters' passing means something)."""
    hits = [name for name, pattern in MISUSES.items() if re.search(pattern, case)]
    assert any(name.startswith(what) for name in hits), (case, hits)


def test_the_statement_and_proof_check_catches_a_mixed_pair():
    md = ("```{prf:proposition} X\nA direction of curvature $\\kappa$ has $\\kappa + h\\kappa^2$.\n```\n\n"
          "```{prf:proof}\nFor eigenvalue $\\lambda_i$ it is $\\lambda_i + h\\lambda_i^2$.\n```")
    (block,) = STATEMENT.findall(md)
    statement, proof = block.split("```{prf:proof}", 1)
    assert re.search(r"\\kappa", statement) and re.search(r"\\lambda_i", proof)
