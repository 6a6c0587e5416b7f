"""Plots, HTML reports and run comparisons."""
