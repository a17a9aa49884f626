"""Benchmarks of matomo-middleware (not tests): overhead, delivery throughput, memory.

Run everything with ``python3 bench/run.py`` (see ``bench/README.md``).
"""
