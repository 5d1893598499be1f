"""The layers you can see in the tree are the layers the imports keep.

The contracts live in pyproject.toml ([tool.importlinter]); `lint-imports` checks them in CI
and here. These tests also show that each contract can fail: a copy of the tree with one
forbidden import added must break it. Import cycles are found with grimp (the graph
import-linter builds), counting imports inside functions and under TYPE_CHECKING too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runner", "portlease", "statefiles")

# Every module-level import cycle in the given packages, as "a -> b" edges each closed by a
# chain back from b to a: a subprocess, so grimp finds the packages on the path it is given
# rather than the ones this process already imported.
CYCLES = """
import json, sys, grimp
graph = grimp.build_graph(*sys.argv[1:])
edges = set()
for importer in sorted(graph.modules):
    for imported in graph.find_modules_directly_imported_by(importer):
        if imported in graph.modules and graph.chain_exists(importer=imported, imported=importer):
            edges.add(importer + " -> " + imported)
print(json.dumps(sorted(edges)))
"""


def run_in(tree: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    linter = Path(sys.executable).with_name("lint-imports")
    return run_in(tree, str(linter), "--no-cache", "--config", str(tree / "pyproject.toml"))


def import_cycles(tree: Path) -> list[str]:
    done = run_in(tree, sys.executable, "-c", CYCLES, *PACKAGES)
    assert done.returncode == 0, done.stderr
    cycles: list[str] = json.loads(done.stdout)
    return cycles


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packages and their contracts, for tests that break them."""
    copy = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def add_import(tree: Path, module: str, statement: str) -> Path:
    """A copy of `tree` in which `module` also runs `statement` (inside a function, which
    import-linter counts as much as a top-level import)."""
    broken = tree.with_name(tree.name + "-" + module.replace(".", "-"))
    if broken.exists():
        shutil.rmtree(broken)
    shutil.copytree(tree, broken)
    path = broken.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = broken.joinpath(*module.split("."), "__init__.py")
    with path.open("a", encoding="utf-8") as file:
        file.write(f"\n\ndef _added() -> None:\n    {statement}\n")
    return broken


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_tree_has_no_import_cycle() -> None:
    assert import_cycles(ROOT) == []


def test_the_copy_is_faithful(tree: Path) -> None:
    """The breaking tests below mean something only if the unbroken copy passes."""
    done = lint_imports(tree)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        # A layer importing upwards: the stores reaching for the parent's supervisor.
        (
            "runner._stores._token_store",
            "import runner._parent._supervisor",
            "runner's layers import downwards only",
        ),
        # The child loading the parent, which would cost every login's child its start-up.
        ("runner._child._login", "import runner._stores._token_store", "a login's child loads"),
        ("runner._child._login", "import portlease", "a login's child loads"),
        # The pure core doing I/O.
        ("runner._core._pages", "import socket", "the pure core"),
        ("runner.errors", "import httpx", "the pure core"),
        # A private module reaching for a public facade rather than the name's home.
        ("runner._parent._runner", "import runner.store", "runner's private modules import"),
        ("runner.sandbox.provider", "import runner._core._spec", "the sandbox imports nothing"),
        ("runner._hosts._provider", "import runner.sandbox", "only the command line's demo"),
        ("portlease.lease", "import runner", "portlease knows nothing of runner"),
        ("statefiles._reading", "import portlease", "statefiles imports no other package"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tree: Path, module: str, statement: str, contract: str
) -> None:
    done = lint_imports(add_import(tree, module, statement))
    assert done.returncode == 1, done.stdout + done.stderr
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), done.stdout


def test_an_import_cycle_is_found(tree: Path) -> None:
    # _spec imports _identity; _identity importing _spec back closes a cycle.
    broken = add_import(tree, "runner._core._identity", "import runner._core._spec")
    cycles = import_cycles(broken)
    assert "runner._core._identity -> runner._core._spec" in cycles
    assert "runner._core._spec -> runner._core._identity" in cycles
    done = lint_imports(broken)
    assert done.returncode == 1
    assert "no import cycle between sibling packages or modules, at any depth BROKEN" in (
        done.stdout
    )
