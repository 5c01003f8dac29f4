"""Scripts that reproduce the paper's results, and a short demo.

Every script in ``SCRIPTS`` keeps the contract of ``validation.harness``:
``python -m validation.<name> --mode {smoke,short,full} --out DIR``
(each an ``Experiment`` run by ``harness.main``).
``python -m validation`` runs them all (``nox -s validate``).
"""

SCRIPTS: tuple[str, ...] = ("cartpole_embedding", "dmc", "regression")
"""The reproduction scripts, by module name under ``validation``."""
