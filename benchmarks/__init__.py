"""The speed goals of the package (issue 7), measured: not part of the wheel, run from the repository root.

    python -m benchmarks                       # every case; writes book/performance.json (the Performance page)
    python -m benchmarks --quick --cases 1,4   # a smoke test: small sizes, few repetitions
    python -m benchmarks --profile             # also XLA cost-model profiles that explain cases 2, 4 and 5

Modules: ``harness`` (warm-up, interleaved repetitions, medians, ratios, goals, the machine), one ``case_*`` module
per goal, ``profile`` (behind ``--profile``), ``report`` (loading and tables) and ``run`` (the command line).
"""
