"""Benchmarks (never tests): each runs MSS beside a reference in the same run (bench/README.md)."""
