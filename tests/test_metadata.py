"""The metadata declares every package that the code imports: each import of mace_e0_plugin (read
from the source, with ast) that is neither the standard library nor our own package maps to a
distribution that pyproject.toml's [project] dependencies name, unless it is optional and guarded,
and listed below with the reason."""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from conftest import PROJECT

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

PACKAGE = PROJECT / "mace_e0_plugin"
OWN = "mace_e0_plugin"

# Imported only where present (inside ``try: ... except ImportError``), and why it is not required.
OPTIONAL = {
    "matplotlib_inline": "doors/_result.py: only where matplotlib's backend is already the inline one, i.e. "
                         "inside IPython/Jupyter, which ships it; importing it hooks the figures into IPython",
}


def canonical(name: str) -> str:
    """A distribution name normalised as PEP 503 does."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(name, "id", None) in ("ImportError", "ModuleNotFoundError") for name in names)


def _import_module_target(node: ast.Call):
    """The module named by ``importlib.import_module("...")`` or ``__import__("...")``, if literal."""
    function = node.func
    name = getattr(function, "attr", getattr(function, "id", None))
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
        return node.args[0].value
    return None


def imports(path: Path) -> List[Tuple[str, int, bool]]:
    """(top-level module, line, guarded) of every absolute import in ``path``; guarded: inside a
    ``try`` that catches ImportError."""
    tree = ast.parse(path.read_text(), str(path))
    guarded: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            guarded.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and _import_module_target(node):
            names = [_import_module_target(node)]
        found += [(name.split(".")[0], node.lineno, id(node) in guarded) for name in names]
    return found


def third_party_imports() -> Dict[str, List[Tuple[str, bool]]]:
    """{top-level module: [(file:line, guarded), ...]} outside the standard library and our package."""
    found: Dict[str, List[Tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, line, guarded in imports(path):
            if module in sys.stdlib_module_names or module == OWN:
                continue
            found.setdefault(module, []).append((f"{path.relative_to(PROJECT)}:{line}", guarded))
    return found


def declared() -> Set[str]:
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    return {canonical(re.split(r"[\s;\[<>=!~(]", requirement.strip(), maxsplit=1)[0])
            for requirement in pyproject["project"]["dependencies"]}


def distributions(module: str) -> List[str]:
    return sorted({canonical(d) for d in metadata.packages_distributions().get(module, [])})


def test_the_reader_sees_the_imports_we_know_of():
    found = third_party_imports()
    assert {"torch", "mace", "numpy", "ase"} <= set(found), sorted(found)
    assert all(guarded for _, guarded in found["matplotlib_inline"])
    assert not any(guarded for _, guarded in found["torch"])


def test_every_imported_package_is_declared():
    missing = []
    for module, places in sorted(third_party_imports().items()):
        if module in OPTIONAL:
            continue
        owners = distributions(module)
        assert owners, f"{module} ({places[0][0]}) is imported but belongs to no installed distribution"
        if not set(owners) & declared():
            missing.append(f"{module} (from {' or '.join(owners)}; first at {places[0][0]})")
    assert missing == [], f"imported but not in pyproject.toml's [project] dependencies: {missing}"


def test_the_optional_imports_are_guarded_and_still_used():
    found = third_party_imports()
    for module, reason in OPTIONAL.items():
        assert module in found, f"{module} is no longer imported: take it off OPTIONAL ({reason})"
        unguarded = [place for place, guarded in found[module] if not guarded]
        assert unguarded == [], f"{module} is optional but imported without a guard at {unguarded}"
    unlisted = [f"{module} at {place}" for module, places in found.items() if module not in OPTIONAL
                for place, guarded in places if guarded and not set(distributions(module)) & declared()]
    assert unlisted == [], f"guarded imports of undeclared packages, not in OPTIONAL with a reason: {unlisted}"


def test_every_declared_dependency_is_imported():
    used = {owner for module in third_party_imports() for owner in distributions(module)}
    assert sorted(declared() - used) == [], "declared in pyproject.toml but imported nowhere"
