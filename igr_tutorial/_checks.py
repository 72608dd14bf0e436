"""Transitional alias: input validation now lives in :mod:`igr_tutorial._core`.

Only ``curvature.py`` still imports it (that module is being changed on another branch); once it imports
``check_scalar_loss`` from ``._core``, delete this file. Nothing else may import it (tests/test_core.py checks).
"""

from ._core import check_scalar_loss

__all__ = ["check_scalar_loss"]
