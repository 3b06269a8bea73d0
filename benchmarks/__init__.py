"""Benchmarks of gananomaly against its peers (python -m benchmarks run)."""
