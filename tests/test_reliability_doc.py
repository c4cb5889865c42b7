"""docs/RELIABILITY.md names only tests that exist."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "RELIABILITY.md")
# `tests/test_x.py::test_name`, possibly with a parameter id: `::test_name[a]`.
REFERENCE = re.compile(r"\b(tests/[\w/]+\.py)::(\w+)")


def _references(text):
    return sorted(set(REFERENCE.findall(text)))


def _test_functions(path):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def test_references_are_parsed():
    text = "see `tests/test_a.py::test_one` and tests/sub/test_b.py::test_two[x], not test_c.py::x"
    assert _references(text) == [
        ("tests/sub/test_b.py", "test_two"),
        ("tests/test_a.py", "test_one"),
    ]


def test_every_cited_test_exists():
    with open(DOC, encoding="utf-8") as handle:
        references = _references(handle.read())
    # Each area of the issue cites its tests: a page citing none would pass
    # the check below vacuously.
    assert len(references) >= 40
    missing = []
    functions = {}
    for path, name in references:
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full):
            missing.append(f"{path} (no such file)")
            continue
        if path not in functions:
            functions[path] = _test_functions(full)
        if name not in functions[path]:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_a_missing_test_is_found(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_there():\n    pass\n\nx = 'def test_gone'\n")
    assert _test_functions(tmp_path / "test_x.py") == {"test_there"}
