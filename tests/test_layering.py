"""The library sits below the dataset converters: only the entry points import ``data_prep``."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "mammo_seg")
ENTRY_POINTS = {"cli.py", "demo.py"}  # the command line: it wires the converters to the library


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_no_library_module_imports_data_prep():
    offenders = []
    for folder, _, files in os.walk(ROOT):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.relpath(path, ROOT) not in ENTRY_POINTS:
                offenders += [f"{os.path.relpath(path, ROOT)}: {m}" for m in imported_modules(path)
                              if m == "data_prep" or m.startswith("data_prep.")]
    assert offenders == []
