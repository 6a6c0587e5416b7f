"""Looking inside models and runs: pre-training sanity checks (``checks``)."""

from neuralab.probe.checks import CheckResult, format_results, run_checks

__all__ = ["CheckResult", "format_results", "run_checks"]
