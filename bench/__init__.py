"""``python -m bench`` from the repository root: a shim to ``deltaprop.bench.main``; results live in bench/results/."""
