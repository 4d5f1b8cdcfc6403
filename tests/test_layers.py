"""The house plan holds: each layer imports only the layers below it, the math is pure, and the
top of the package stays small. Read from the source (ast), so no import order can hide a breach."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mace_e0_plugin"

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = {
    "errors": 0, "_switch": 0, "_noise": 0,
    "math": 1,
    "glue": 2,
    "io": 3,
    "services": 4,
    "doors": 5, "training": 5,  # the doors stand side by side: neither imports the other
    "testing": 6, "adapters": 6, "_bootstrap": 6, "__init__": 6, "__main__": 6,
}
MATH_FORBIDDEN = ("mace", "ase", "json", "os", "torch.distributed")
MAX_TOP_LEVEL_MODULES = 8


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def top(path: Path) -> str:
    """The layer a file belongs to: its subpackage, or its own name at the top."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported(path: Path):
    """(module name relative to the package or absolute, line) of every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                for name in names:
                    yield name, node.lineno
            else:
                yield node.module, node.lineno
                for alias in node.names:  # from mace_e0_plugin import testing
                    yield f"{node.module}.{alias.name}", node.lineno


def own_layer(name: str):
    """The layer of an import of our own package, or None for anything else."""
    parts = name.split(".")
    if parts[0] != "mace_e0_plugin" or len(parts) == 1:
        return None
    return LAYERS.get(parts[1])


def test_every_module_belongs_to_a_declared_layer():
    assert sorted({top(p) for p in modules()} - set(LAYERS)) == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    layer = LAYERS[top(path)]
    upward = [f"line {line}: {name}" for name, line in imported(path)
              if own_layer(name) is not None and own_layer(name) > layer]
    assert upward == [], f"{path.relative_to(PACKAGE)} (layer {layer}) imports from above"


SIDE_BY_SIDE = ("doors", "training")


@pytest.mark.parametrize("door", SIDE_BY_SIDE)
def test_no_door_imports_another(door):
    others = [name for name in SIDE_BY_SIDE if name != door]
    crossing = [f"{p.relative_to(PACKAGE)}:{line}: {name}" for p in modules() if top(p) == door
                for name, line in imported(p) if name.split(".")[0] == "mace_e0_plugin"
                and len(name.split(".")) > 1 and name.split(".")[1] in others]
    assert crossing == []


def test_the_product_never_imports_the_testing_helpers():
    users = [f"{p.relative_to(PACKAGE)}:{line}" for p in modules() if top(p) != "testing"
             for name, line in imported(p) if name.startswith("mace_e0_plugin.testing")]
    assert users == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "math").glob("*.py")), ids=lambda p: p.name)
def test_the_math_is_pure(path):
    names = [name for name, _ in imported(path)]
    assert [n for n in names if n.split(".")[0] in MATH_FORBIDDEN or n.startswith("torch.distributed")] == []
    tree = ast.parse(path.read_text())
    opens = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", None)) == "open"]
    distributed = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                   and node.attr == "distributed"]
    assert opens == [] and distributed == []


def test_the_solver_lives_in_the_math_layer():
    holders = [p.relative_to(PACKAGE).parts[0] for p in modules() if "class E0LinearSystem" in p.read_text()]
    assert holders == ["math"]


def test_the_tree_shows_the_layers():
    subpackages = [p.parent.name for p in PACKAGE.glob("*/__init__.py")]
    top_level = [p.name for p in PACKAGE.glob("*.py")]
    assert len(subpackages) >= 3 and len(top_level) <= MAX_TOP_LEVEL_MODULES, (subpackages, top_level)


def test_a_layer_names_its_public_surface():
    for init in PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        exported = [node for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets)]
        assert exported, f"{init.parent.name}/__init__.py has no __all__"


# Where an import inside a function is needed, and why; everywhere else imports sit at the top,
# so that a module's first lines show what it depends on.
LATE_IMPORTS = {
    "__init__.py": "the Python API is imported on first use: the start-up hook imports this package in every process",
    "_bootstrap.py": "start-up: standard library only until mace's training script loads",
    "__main__.py": "mace prints while it is imported; the command imports the doors under a redirect",
    "doors/_result.py": "importing matplotlib_inline hooks into IPython, so only where the inline backend is on",
}


def late_imports(path: Path):
    tree = ast.parse(path.read_text())
    return [node.lineno for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_sit_at_the_top_but_where_start_up_needs_them_late(path):
    name = path.relative_to(PACKAGE).as_posix()
    if name in LATE_IMPORTS:
        assert late_imports(path), f"{name} has no late import left: take it off LATE_IMPORTS"
    else:
        assert late_imports(path) == [], f"{name}: imports inside functions at lines {late_imports(path)}"


# -- each subpackage's __all__ is what the rest uses of it ---------------------------------------------
USERS = [PACKAGE.parent / folder for folder in ("tests", "benchmarks", "examples")]


def _exported(init: Path):
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def _uses_from_outside(subpackage: str):
    """Every name that a module outside ``subpackage`` takes from it: ``from mace_e0_plugin.S import N``
    (or relatively, inside the package), ``S.N`` after ``from mace_e0_plugin import S as alias`` or
    ``import mace_e0_plugin.S as alias``, and the package's lazy names (``__init__._LAZY``)."""
    target = f"mace_e0_plugin.{subpackage}"
    files = [p for p in modules() if top(p) != subpackage] + [p for folder in USERS for p in folder.rglob("*.py")]
    used = set()
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        inside = path.is_relative_to(PACKAGE)
        package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1] if inside else ()
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level and inside:
                    module = ".".join(list(package[:len(package) - node.level + 1]) + ([module] if module else []))
                if module == target:
                    used |= {alias.name for alias in node.names}
                elif module == "mace_e0_plugin":
                    aliases |= {alias.asname or alias.name for alias in node.names if alias.name == subpackage}
            elif isinstance(node, ast.Import):
                aliases |= {alias.asname for alias in node.names if alias.name == target and alias.asname}
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id in aliases}
        # importlib.import_module("mace_e0_plugin.S") behind a function (adapters.py: stdlib only)
        loaders = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and "import_module" in ast.unparse(f)
                   and (f'"{target}"' in ast.unparse(f) or any(isinstance(n, ast.Assign) and ast.unparse(n.value) == repr(target)
                                                             for n in tree.body))}
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) in loaders}
    lazy = ast.literal_eval(next(node.value for node in ast.parse((PACKAGE / "__init__.py").read_text()).body
                                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_LAZY"))
    used |= {name for name, module in lazy.items() if module == target}
    return {name for name in used if not name.startswith("_")}  # a private module reached into is not the surface


@pytest.mark.parametrize("subpackage", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_all_lists_what_the_rest_uses_and_nothing_else(subpackage):
    exported, used = _exported(PACKAGE / subpackage / "__init__.py"), _uses_from_outside(subpackage)
    assert sorted(exported - used) == [], f"{subpackage}/__init__.py exports names nothing outside it uses"
    assert sorted(used - exported) == [], f"others take these from {subpackage} without it exporting them"
