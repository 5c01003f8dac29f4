"""Benchmarks of the LML projection and of DCEM (issue 6): ``python -m benchmarks.run``."""
