"""Every spec statement is checked by a test, and every test names real statements."""

from __future__ import annotations

from tests.spec_index import coverage, spec_references, spec_statements


def test_every_statement_has_a_test() -> None:
    untested = [ident for ident, tests in coverage().items() if not tests]
    assert not untested, f"spec statements with no test: {untested}"


def test_every_reference_names_a_statement() -> None:
    known = spec_statements()
    unknown = {
        test: [i for i in ids if i not in known]
        for test, ids in spec_references().items()
        if any(i not in known for i in ids)
    }
    assert not unknown, f"tests naming spec IDs that do not exist: {unknown}"


def test_the_index_sees_the_spec_and_the_tests() -> None:
    # Guards the two checks above against a parser that finds nothing.
    assert len(spec_statements()) >= 40
    assert len(spec_references()) >= 40
