"""What ``bench/pipeline.py`` runs the mesh with: its processes (``processes``) and what it reads
from and writes to Kafka (``kafka``: the transitions observed, the round-trip floor). ``chaos``
runs the mesh with the same ``backends`` and ``processes``.

A package rather than ``bench/<name>.py`` modules: ``scripts/bench_report.py`` runs every
top-level module of ``bench/`` as a benchmark.
"""
