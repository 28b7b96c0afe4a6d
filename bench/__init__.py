"""Clarion's benchmarks, run by hand and never as timed tests: ``python -m bench --list``."""
