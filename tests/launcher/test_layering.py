"""The layout's promises, checked on the source: one home per fact, no import circles.

docs/design.md ("Layers" and "One home for each fact") says what each package may import;
these tests read every module's imports with `ast` (nothing is imported or run) and fail
naming the module that breaks a rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("launcher", "jobs")
# Every file the run directory holds, by the name that only launcher/rundir/layout.py (and,
# for what a job writes, launcher/contract.py) may spell.
RUN_DIR_FILES = ("sweep.yaml", "sweep.json", "specs.jsonl", "supervisor.json",
                 "supervisor.log", "supervisor.lock", "slurm.json", "jobs.txt", "sweep.sbatch",
                 "spec.json", "state.json", "stdout.log", "result.json", "metrics.jsonl",
                 "checkpoint.pt")
LAYOUT_HOMES = {"launcher/rundir/layout.py", "launcher/contract.py"}


def modules() -> dict[str, Path]:
    """Return dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(path: Path) -> set[str]:
    """Return every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def project_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Return the project modules a file imports (a name imported from a module counts as it)."""
    return {name for name in imports(path) if name in known}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_each_run_directory_file_is_named_in_one_module():
    for name in RUN_DIR_FILES:
        spelled = [rel(p) for p in modules().values() if name in p.read_text()]
        assert len(spelled) == 1 and set(spelled) <= LAYOUT_HOMES, (name, spelled)


def test_each_exit_code_is_defined_once():
    defined: dict[str, list[str]] = {}
    for path in modules().values():
        for match in re.finditer(r"^(EXIT_\w+)\s*=", path.read_text(), re.MULTILINE):
            defined.setdefault(match.group(1), []).append(rel(path))
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}
    assert "EXIT_REQUEUE" in defined and defined["EXIT_REQUEUE"] == ["launcher/contract.py"]
    for path in modules().values():  # the requeue code is a name, never a bare 75
        if rel(path) != "launcher/contract.py":
            assert not re.search(r"(?<![\w.])75(?![\w.])", path.read_text()), rel(path)


def test_no_import_circles():
    known = modules()
    graph = {name: project_imports(path, known) for name, path in known.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail("import circle: " + " -> ".join(trail[trail.index(name):] + [name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            if not other.startswith(name + "."):  # a package importing its own module
                visit(other, [*trail, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_who_may_import_what():
    for name, path in modules().items():
        found = imports(path)
        if name.startswith("launcher"):
            assert not {m for m in found if m.split(".")[0] == "torch"}, f"{name} imports torch"
        if any(m.split(".")[0] == "pynvml" for m in found):
            assert name == "launcher.machine.nvml", f"{name} imports pynvml"
        if name.startswith("jobs"):  # the payload knows the contract, nothing else of ours
            theirs = {m for m in found if m.split(".")[0] == "launcher"}
            assert all(m.startswith("launcher.contract") for m in theirs), (name, theirs)


def test_package_faces_are_empty():
    # `launch status` imports a few modules of several packages: a package that imported
    # its modules in __init__.py would make it pay for all of them.
    for package in sorted((ROOT / "launcher").rglob("__init__.py")):
        assert package.read_text().strip() == "", rel(package)
