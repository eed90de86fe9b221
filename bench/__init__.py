"""Benchmarks; a package so that worker subprocesses can import ``bench.noop_app``."""
