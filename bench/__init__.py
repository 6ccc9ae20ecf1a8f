"""Benchmark suite (scripts, not tests): `make bench` / `make bench-quick`. See bench/README.md."""
