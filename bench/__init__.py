"""Benchmarks: the service measured against a bare FastAPI floor on the same machine.

Run with ``make bench`` (or ``python -m bench.run --help``). See ``bench/README.md``.
"""
