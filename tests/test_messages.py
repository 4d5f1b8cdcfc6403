"""Every error message the plugin can raise renders whole, in every door's words.

The messages are collected from the source (ast): every construction of E0Error, E0InputError,
E0ModelError or E0WriteError in mace_e0_plugin, the training door's included. A message with fields
(``errors``) must be one string constant, never an f-string or text built at run time, with every
field named at the call; it is then made with a stand-in for each value and rendered with the
Python, ``mace-e0``, ``mace_run_train`` and heads-block spellings. A message without fields is plain
text, shown as written: its own text must hold no brace, which is what a forgotten ``f`` or a field
without its keyword leaves behind. The mechanism itself must refuse, when the error is made, the
mistakes that used to break a message silently: a template turned half f-string.
"""

import ast
import functools
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from mace_e0_plugin import errors
from mace_e0_plugin.errors import NAME_ONLY, E0InputError, E0WriteError, OptionField, as_option, python_spelling
from mace_e0_plugin.services import OPTIONS, cli_spelling, training_spelling

PACKAGE = Path(__file__).resolve().parents[1] / "mace_e0_plugin"
ERRORS = ("E0Error", "E0InputError", "E0ModelError", "E0WriteError")
STAND_IN_OPTION = "energy_key"  # the option an ``as_option(value, name)`` field stands for, where name is a variable
PER_HEAD = {OPTIONS[name].train.lstrip("-"): "x" for name in OPTIONS if OPTIONS[name].per_head}
SPELLINGS = {
    "python": python_spelling,
    "mace-e0": cli_spelling,
    "mace_run_train": training_spelling,
    "mace_run_train heads block": functools.partial(training_spelling, head="h", head_options=PER_HEAD),
}


@dataclass
class Construction:
    """One ``E0...Error(template, **fields)`` call in the source."""

    where: str  # path:line
    cls: str
    template: Optional[ast.expr]
    keywords: List[ast.keyword]

    @property
    def has_fields(self) -> bool:
        return bool(self.keywords)


def _called(node: ast.Call) -> Optional[str]:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def constructions_in(tree: ast.AST, where: str) -> List[Construction]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called(node) in ERRORS:
            template = node.args[0] if node.args else None
            found.append(Construction(f"{where}:{node.lineno}", _called(node), template, node.keywords))
    return found


def all_constructions() -> List[Construction]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "errors.py":  # where the classes are defined, not raised
            continue
        found += constructions_in(ast.parse(path.read_text(), str(path)), str(path.relative_to(PACKAGE.parent)))
    return found


CONSTRUCTIONS = all_constructions()


def violations(construction: Construction) -> List[str]:
    """What is wrong with a construction, read from its source alone."""
    problems = []
    template = construction.template
    if template is None:
        return ["no message"]
    if construction.has_fields:
        if not (isinstance(template, ast.Constant) and isinstance(template.value, str)):
            problems.append("a message with fields must be one string constant (no f-string, no text built at "
                            "run time): a value interpolated into it could hold a brace, or be a field's")
        if any(keyword.arg is None for keyword in construction.keywords):
            problems.append("its fields must be named at the call, not passed as **mapping")
        return problems
    for text in _own_text(template):
        if "{" in text or "}" in text:
            problems.append(f"a message without fields is shown as written, and {text!r} holds a brace: a "
                            "forgotten f, or a field without its keyword (give it as a keyword)")
    return problems


def _own_text(node: ast.expr) -> List[str]:
    """The message's own string constants: not those inside an interpolated value or a call."""
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    if isinstance(node, (ast.FormattedValue, ast.Call)):
        return []
    return [text for child in ast.iter_child_nodes(node) for text in _own_text(child)]


def stand_in_fields(construction: Construction) -> Dict[str, object]:
    """A stand-in for every field: an option's (declared, where its name is written out) or a value."""
    fields = {}
    for keyword in construction.keywords:
        value = keyword.value
        if isinstance(value, ast.Call) and _called(value) == "as_option":
            given = {**dict(zip(("value", "name"), value.args)), **{k.arg: k.value for k in value.keywords}}
            name = given.get("name")
            if isinstance(name, ast.Constant):
                option = name.value
            else:
                option = keyword.arg if name is None else (keyword.arg if keyword.arg in OPTIONS else STAND_IN_OPTION)
            fields[keyword.arg] = as_option(f"<{keyword.arg}>" if "value" in given else NAME_ONLY, option)
        else:
            fields[keyword.arg] = f"<{keyword.arg}>"
    return fields


def test_the_messages_are_found():
    """The collection reads the source: it finds the constructions of every layer that raises."""
    assert len(CONSTRUCTIONS) > 40
    files = {c.where.split(":")[0] for c in CONSTRUCTIONS}
    for expected in ("io/_priors.py", "glue/_estimate.py", "services/_options.py", "doors/_cli.py"):
        assert any(name.endswith(expected) for name in files), expected
    assert sum(c.has_fields for c in CONSTRUCTIONS) >= 15


@pytest.mark.parametrize("construction", CONSTRUCTIONS, ids=lambda c: c.where)
def test_every_message_renders_whole_in_every_doors_words(construction):
    assert violations(construction) == []
    if not construction.has_fields:
        return
    fields = stand_in_fields(construction)
    for field in fields.values():
        if isinstance(field, OptionField):
            assert field.name in OPTIONS, f"{field.name} is no declared option: the doors would spell it by guess"
    error = getattr(errors, construction.cls)(construction.template.value, **fields)  # refuses a broken template
    literal_braces = sum(text.count("{") + text.count("}") for text, *_ in
                         string.Formatter().parse(construction.template.value))  # {{ and }}, shown as one
    for door, spell in SPELLINGS.items():
        rendered = error.render(spell)
        assert rendered.count("{") + rendered.count("}") == literal_braces, (door, rendered)
        assert "NAME_ONLY" not in rendered and "<object" not in rendered, (door, rendered)
        for name, field in fields.items():
            if isinstance(field, OptionField):
                assert spell(field.name, field.value) in rendered, (door, name, rendered)
            else:
                assert field in rendered, (door, name, rendered)


# -- the mechanism refuses the mistakes that used to pass silently -------------------------------------
def test_a_template_turned_half_f_string_is_refused_when_the_error_is_made():
    energy_key = "REF_energy"
    # the second half an f-string: the field became the value, and the keyword is left without its field
    with pytest.raises(TypeError, match="no field for keyword energy_key"):
        E0InputError(f"no finite energy under key {energy_key!r}; the prior must use the same {energy_key}.",
                     energy_key=as_option())
    # the first half not an f-string: a field without its keyword
    with pytest.raises(TypeError, match="no keyword for name"):
        E0InputError("head '{name}': check {energy_key}.", energy_key=as_option(energy_key))
    # a value interpolated into a template: its braces break the template
    path = "run{1}.xyz"
    with pytest.raises(TypeError):
        E0InputError(f"{path} exists; pass {{force}} to write over it.", force=as_option())
    with pytest.raises(TypeError, match="no keyword for Z"):
        E0InputError("expected {Z: eV} in {path}", path=path)
    with pytest.raises(TypeError, match="literal braces"):
        E0InputError("expected } in {path}", path=path)
    with pytest.raises(TypeError, match="no conversion or format spec"):
        E0InputError("{energy_key!r} is missing", energy_key=as_option(energy_key))


def test_the_static_check_catches_what_construction_cannot():
    def check(source: str) -> List[str]:
        (construction,) = constructions_in(ast.parse(source), "snippet")
        return violations(construction)

    assert check('E0InputError(f"{path}: pass {{force}}", force=as_option())')  # f-string template
    assert check('E0InputError("{a}", **{name: value})')  # fields not named
    assert check('E0InputError("head \'{name}\': no data")')  # forgotten f, or forgotten keyword
    assert check('E0InputError("a JSON object {{Z: eV}}")')  # escaped braces without fields show doubled
    assert check('E0InputError(f"{path}: " + "pass {force}")')
    assert not check('E0InputError(f"{path}: {\', \'.join(names)} {{}}".strip())')  # a call: not its own text
    assert not check('E0InputError(f"{path}: no such file.")')
    assert not check('E0InputError("{path}: pass {force}.", path=path, force=as_option())')


def test_values_are_shown_as_they_are_and_options_as_each_door_spells_them():
    error = E0WriteError("cannot write {path}: {cause}; pass {force} or change {output}.", path="run{1}.json",
                         cause="no space {left}", force=as_option(), output=as_option("out/{x}.json"))
    assert str(error) == "cannot write run{1}.json: no space {left}; pass force or change output='out/{x}.json'."
    assert error.render(cli_spelling) == ("cannot write run{1}.json: no space {left}; pass --force or change "
                                          "--output out/{x}.json.")
    assert error.options == {"force": NAME_ONLY, "output": "out/{x}.json"}
    named = E0InputError("{option}: must be a positive integer.", option=as_option(0, "batch_size"))
    assert named.render(training_spelling) == "--valid_batch_size=0: must be a positive integer."


def test_a_plain_message_is_shown_as_written():
    assert str(E0InputError("DATA run{1}.xyz: no such file or folder.")) == "DATA run{1}.xyz: no such file or folder."
