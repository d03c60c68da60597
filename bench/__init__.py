"""Benchmarks: each module is one measurement, run with ``python -m bench.<name>`` (see docs/benchmarks.md)."""
