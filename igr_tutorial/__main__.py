"""``python -m igr_tutorial``: see :mod:`igr_tutorial.cli`."""

from .cli import main

raise SystemExit(main())
