"""Benchmarks (not tests): `make bench` runs `python -m bench.http_disclosure`. See docs/benchmarks.md."""
