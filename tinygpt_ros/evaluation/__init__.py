"""Offline and live evaluation, metrics, reports and benchmarks."""
