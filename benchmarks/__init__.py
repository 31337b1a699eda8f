"""Benchmarks: runnable scripts that print Scout's cost as ratios against its peers."""
