"""``python -m benchmarks`` from the repository root: see :mod:`benchmarks.run`."""

import sys

from benchmarks.run import main

sys.exit(main())
