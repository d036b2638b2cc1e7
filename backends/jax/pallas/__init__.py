"""liquidssm.jax.pallas: Pallas kernels for the JAX scans (strategy LIQUIDSSM_JAX_SCAN=pallas).

selective_core (real A, levels m < p) and linear_scan (diag / liquid, real and complex) are
time-major cores with custom vjps (recompute from chunk-start states); liquidssm.jax.scans and
liquidssm.jax.selective call them when the strategy is `pallas`. Block sizes per platform:
_plan.py. On CPU they run only in the Pallas interpreter (LIQUIDSSM_PALLAS_INTERPRET=1).
"""

from ._linear import linear_scan
from ._plan import PLANS, Plan, interpret_requested, plan
from ._selective import selective_core

__all__ = ["selective_core", "linear_scan", "plan", "Plan", "PLANS", "interpret_requested"]
