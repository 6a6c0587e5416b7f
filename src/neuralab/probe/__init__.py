"""Looking inside models and runs: pre-training sanity checks (``checks``), saliency maps
(``saliency``; its dispatcher ``saliency.saliency`` is not re-exported here, where the name
would hide the module)."""

from neuralab.probe.checks import CheckResult, format_results, run_checks
from neuralab.probe.saliency import (
    completeness_gap,
    gradient_x_input,
    integrated_gradients,
    plot_saliency,
    saliency_run,
    smoothgrad,
    vanilla_gradient,
)

__all__ = ["CheckResult", "format_results", "run_checks"]
__all__ += [
    "completeness_gap",
    "gradient_x_input",
    "integrated_gradients",
    "plot_saliency",
    "saliency_run",
    "smoothgrad",
    "vanilla_gradient",
]
