"""Benchmarks (not tests): `make bench` runs them all (bench-http, bench-scale, bench-scaling, bench-policy,
bench-audit, bench-portal, then bench-plots). See docs/benchmarks.md and docs/scaling.md."""
