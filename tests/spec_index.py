"""The traceability index between spec statements and tests.

``python -m tests.spec_index`` prints every statement with the tests that
check it. Statements are the headings ``### AREA-N — title`` of spec/*.md;
a test checks a statement when it carries ``@pytest.mark.spec("AREA-N")``
(on the function, its class, or the module's ``pytestmark``).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "spec"
TEST_DIR = ROOT / "tests"
STATEMENT = re.compile(r"^###\s+([A-Z]+-\d+)\s+—\s+(.+?)\s*$", re.MULTILINE)


def spec_statements() -> dict[str, str]:
    """ID → title for every statement of the spec, in file order."""
    found: dict[str, str] = {}
    for path in sorted(SPEC_DIR.glob("*.md")):
        for ident, title in STATEMENT.findall(path.read_text(encoding="utf-8")):
            if ident in found:
                raise ValueError(f"spec ID {ident} is defined twice")
            found[ident] = title
    return found


def _spec_marks(decorators: list[ast.expr]) -> list[str]:
    """IDs named by ``pytest.mark.spec(...)`` among ``decorators``."""
    ids: list[str] = []
    for node in decorators:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "spec"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "mark"
        ):
            for arg in node.args:
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    raise ValueError(f"spec marks take string literals, got {ast.dump(arg)}")
                ids.append(arg.value)
    return ids


def spec_references() -> dict[str, list[str]]:
    """Test node id → the spec IDs it checks, from the test sources."""
    refs: dict[str, list[str]] = {}
    for path in sorted(TEST_DIR.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT).as_posix()
        module_ids: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
            ):
                values = node.value.elts if isinstance(node.value, ast.List) else [node.value]
                module_ids += _spec_marks(values)

        def visit(body: list[ast.stmt], prefix: str, inherited: list[str]) -> None:
            for node in body:
                if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                    ids = inherited + _spec_marks(node.decorator_list)
                    visit(node.body, f"{prefix}::{node.name}", ids)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    node.name.startswith("test")
                ):
                    ids = inherited + _spec_marks(node.decorator_list)
                    if ids:
                        refs[f"{prefix}::{node.name}"] = ids

        visit(tree.body, rel, module_ids)
    return refs


def coverage() -> dict[str, list[str]]:
    """Spec ID → the tests that check it (empty list: untested)."""
    table: dict[str, list[str]] = defaultdict(list)
    for ident in spec_statements():
        table[ident] = []
    for test, ids in spec_references().items():
        for ident in ids:
            table[ident].append(test)
    return dict(table)


def main() -> None:
    titles = spec_statements()
    for ident, tests in coverage().items():
        title = titles.get(ident, "(not in the spec)")
        print(f"{ident:8} {title}")
        for test in tests or ["-- NO TEST --"]:
            print(f"         {test}")


if __name__ == "__main__":
    main()
