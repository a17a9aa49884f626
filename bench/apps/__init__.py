"""The same tiny apps, bare or wrapped (``BENCH_VARIANT`` = bare, ours or peer)."""
