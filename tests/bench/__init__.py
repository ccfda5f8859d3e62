"""Benchmarks of our arq against the published arq 0.26.3, run by hand: `make bench` (`python -m tests.bench.run`)."""
