"""What docs/ quotes is what the code says: every marked output block is what its producer prints
(tests/doc_outputs.py, numbers masked), every output-looking block is marked, the signatures
quoted are the functions' own, every ``mace-e0`` command in docs/ parses, the options table is the
one generated from the declarations, and ``mace-e0 --help`` reads as plain text."""

import argparse
import inspect
import re

import pytest

from conftest import PROJECT
from doc_outputs import DOCS, blocks, differences, produce
from mace_e0_plugin import reestimate_e0s
from mace_e0_plugin.doors import build_parser, diagnose_e0s
from options_reference import exit_statuses_table, options_table

FENCE = re.compile(r"(<!-- output: [\w-]+ -->\n)?```(\w*)\n(.*?)^```", re.S | re.M)
COMMAND_LANGUAGES = ("bash", "python")  # what a reader types; the rest is what the code prints
SIGNATURES = {"reestimate_e0s": reestimate_e0s, "diagnose_e0s": diagnose_e0s}


@pytest.fixture(scope="module")
def produced():
    return produce(full=False)


@pytest.mark.slow  # the producers fine-tune the toy model (docs/training.md's quoted logs)
@pytest.mark.parametrize("key", sorted(blocks()))
def test_each_quoted_output_is_what_the_code_prints(key, produced):
    page, quoted = blocks()[key]
    if key not in produced:
        pytest.skip(f"{key} ({page.name}) runs on ../shared, which is absent")
    assert differences(quoted, produced[key]) == [], f"{page.name}, block {key}"


def test_every_output_in_docs_is_marked():
    unmarked = []
    for page in sorted(DOCS.glob("*.md")):
        for marker, language, body in FENCE.findall(page.read_text()):
            if not marker and language not in COMMAND_LANGUAGES and not body.lstrip().startswith("{"):
                unmarked.append(f"{page.name}: {body.splitlines()[0][:80]}")
    assert unmarked == []


def test_the_differences_catch_a_changed_line():
    quoted = "E0 provenance: rank 1 of 2\n...\nRMSE 3.2 meV\n"
    assert differences(quoted, "E0 provenance: rank 2 of 3\nmore\nRMSE 4.1 meV\n") == []
    assert differences(quoted, "E0 provenance: rank 2 of 3\nRMSE of E 4.1 meV\n") != []
    assert differences("a\nb\n", "a\n") != [] and differences("a\n", "a\nb\n") != []


def plain_signature(function) -> str:
    """``name(a, b=None, *, c=1)``: the parameters and defaults, without annotations."""
    parts, keyword_only = [], False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        parts.append(parameter.name if parameter.default is parameter.empty else f"{parameter.name}={parameter.default!r}")
    return f"{function.__name__}({', '.join(parts)})"


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_quoted_signatures_are_the_functions(name):
    text = "".join((DOCS / page).read_text() for page in ("python-api.md", "diagnose-and-check.md"))
    quoted = re.search(rf"<!-- signature: {name} -->\n```python\n(?:\w+ = )?(.*?)```", text, re.S)
    assert quoted, f"no quoted signature of {name}"
    assert " ".join(quoted.group(1).split()).replace("( ", "(") == plain_signature(SIGNATURES[name])


def mace_e0_commands():
    for page in [*sorted(DOCS.glob("*.md")), PROJECT / "README.md"]:
        for line in page.read_text().splitlines():
            for command in re.findall(r"(?:^\$ |^\s*|`)(mace-e0 (?:estimate|show|apply|check|diagnose)[^`\n]*)", line):
                words = command.strip().rstrip("`").split()
                # a command, not prose naming one (`mace-e0 check`, `mace-e0 estimate --plot`): it has arguments
                if "..." not in command and "[" not in command and words[2:3] and not words[2].startswith("-"):
                    yield page.name, " ".join(words)


@pytest.mark.parametrize("page, command", list(mace_e0_commands()))
def test_every_mace_e0_command_in_the_docs_parses(page, command):
    try:
        build_parser().parse_args(command.split()[1:])
    except SystemExit as error:
        pytest.fail(f"{page}: `{command}` does not parse ({error})")


def test_the_options_table_is_generated_from_the_declarations():
    text = (DOCS / "options.md").read_text()
    for name, table in (("options_table", options_table()), ("exit_statuses_table", exit_statuses_table())):
        block = re.search(rf"<!-- generated: {name} -->\n(.*?)<!-- /generated -->", text, re.S)
        assert block and block.group(1) == table, "docs/options.md is stale: python tests/doc_outputs.py --write"


def test_help_reads_as_plain_text():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for text in [parser.format_help(), *(sub.format_help() for sub in commands.choices.values())]:
        assert "``" not in text and ":class:" not in text
