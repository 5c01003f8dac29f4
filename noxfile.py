"""Sessions: ``nox -s demo`` (the main job), ``nox -s tests typecheck`` (what CI runs), ``lint``.

Torch is installed before the project so that pip never resolves ``torch`` on
its own (a bare requirement pulls the newest CUDA build, several GB). The
default is the CPU wheel ``torch==2.13.0``; GPU users set ``DCEM_TORCH`` to
the requirement of their build (e.g. ``DCEM_TORCH="torch==2.13.0"`` with
``PIP_INDEX_URL`` pointing at their CUDA index), or ``DCEM_TORCH=skip`` to
keep whatever torch the environment has (with ``--no-venv``).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "typecheck", "lint"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("DCEM_TORCH", "torch==2.13.0")


def install(session: nox.Session, *extras: str) -> None:
    """Torch first, then the project (editable) with ``extras``, with torch held to
    ``TORCH`` by a constraint (peers such as torchrl must not replace it)."""
    target = f".[{','.join(extras)}]" if extras else "."
    if TORCH == "skip":
        session.install("-e", target)
        return
    session.install(TORCH)
    constraints = os.path.join(session.create_tmp(), "torch-constraint.txt")
    with open(constraints, "w") as handle:
        handle.write(TORCH + "\n")
    session.install("-e", target, "--constraint", constraints)
    if "test" in extras:
        # mbrl-lib's own pins do not resolve on Python 3.11; its working set is the
        # ``mbrl`` extra (in ``test``), and the package itself goes in without deps.
        session.install("--no-deps", "mbrl==0.2.0")


@nox.session
def demo(session: nox.Session) -> None:
    """``python -m validation.demo``: CEM and DCEM on Rastrigin, then learning through DCEM."""
    install(session)
    session.run("python", "-m", "validation.demo", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (Hypothesis profile ``ci``; ``-- --hypothesis-profile=thorough`` for more).

    The ``test`` extra includes ``cluster`` (a test runs a smoke experiment on a local Ray
    instance) and the peers ``torchrl`` and ``mbrl`` (the adapters are tested against them).
    """
    install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """``mypy --strict`` on impl, reference, validation, benchmarks and tests (pyproject)."""
    install(session, "test", "dev")
    session.run("mypy", *session.posargs)


@nox.session
def validate(session: nox.Session) -> None:
    """Every reproduction script, smoke mode by default (``-- --mode short`` for more)."""
    install(session, "validation")
    session.run("python", "-m", "validation", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (issue 6): ratios against baselines, to benchmarks/results/<device>.{json,md}.

    ``-- --quick`` for a fast structural run; ``-- --threads 1`` on a shared machine.
    """
    install(session)
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: the lint rules, and the formatting (README code blocks included)."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
