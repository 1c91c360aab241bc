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


def imports_of(relative):
    """Every ``mammo_seg`` module imported anywhere in ``relative`` (a file or a package below mammo_seg)."""
    path = os.path.join(ROOT, relative)
    files = ([os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".py")]
             if os.path.isdir(path) else [path])
    return {m for f in files for m in imported_modules(f) if m.startswith("mammo_seg")}


def under(modules, *packages):
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_evaluation_reads_predictions_through_their_owner_and_inference_never_imports_evaluation():
    # evaluate reads predict's files through the one module that writes them; nothing in inference (the
    # operating point included) imports evaluate back: no loop
    assert under(imports_of("evaluate.py"), "mammo_seg.inference") == ["mammo_seg.inference.prediction_output"]
    assert under(imports_of("inference"), "mammo_seg.evaluate") == []


def test_the_measurement_rules_sit_below_everything_that_measures():
    above = ("mammo_seg.inference", "mammo_seg.training", "mammo_seg.evaluate", "mammo_seg.config",
             "mammo_seg.cli", "mammo_seg.study", "mammo_seg.run_dir")
    for module in ("overlap.py", "detection.py", "metrics.py", "losses"):
        assert under(imports_of(module), *above) == [], module
