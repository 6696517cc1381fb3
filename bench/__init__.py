"""Benchmarks: each ``bench_*.py`` module has a ``main()`` that prints ratios measured side by side.

Run all of them with ``python -m bench`` (``make bench``), or some with ``python -m bench links kvstore``.
"""
