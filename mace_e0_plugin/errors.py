"""The errors the plugin raises for a cause it can name, one class per cause under one base,
spelled the way each door names its options.

    E0Error                     catch this to catch them all (a notebook's loop over datasets)
      E0InputError(ValueError)  bad input: a file, an option or the data; the fix is the user's
      E0WriteError(OSError)     a file could not be written; nothing was, and any old file is unchanged
      E0ModelError(ValueError)  a model or checkpoint that does not fit: not a MACE model with E0s,
                                an energy that does not split into E0s and the rest, other keys

A message that names an option is a template (``str.format`` syntax, never an f-string) whose every
field is given as a keyword: an option's value wrapped in ``as_option``, any other value as it is::

    E0InputError("no config in {source} has an energy under {energy_key}.",
                 source="train.xyz", energy_key=as_option("REF_energy"))

Each door renders it in its own words (``services.cli_spelling``, ``services.training_spelling``):
``energy_key='REF_energy'`` from Python, ``--energy-key REF_energy`` in ``mace-e0``,
``--energy_key=REF_energy`` in ``mace_run_train``; ``as_option()`` names the option without a
value (``pass {force}`` -> ``pass --force``). ``str(error)`` is the Python spelling, since that is
where an uncaught one surfaces.

The template is checked when the error is made: a field without its keyword, a keyword without its
field, a lone brace (literal braces are written ``{{`` and ``}}``) or a format spec on an option is a
TypeError there, so that a template turned half f-string by mistake fails in every test that
raises it instead of showing a broken message. A message without keywords is plain text, shown as
written, never parsed (tests/test_messages.py keeps braces out of those).
"""

import string
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple


class _NameOnly:
    """An option named without a value: "pass {force}" -> "--force". One object, pickled as itself."""

    def __repr__(self) -> str:
        return "NAME_ONLY"

    def __reduce__(self) -> str:
        return "NAME_ONLY"


NAME_ONLY = _NameOnly()

Spelling = Callable[[str, object], str]  # (option name, value or NAME_ONLY) -> the door's words

_FORMATTER = string.Formatter()
_ESCAPED = "{{ and }}"


@dataclass(frozen=True)
class OptionField:
    """An option's value in a message, spelled by the door that shows it (``as_option``)."""

    value: object = NAME_ONLY
    name: Optional[str] = None  # the option's name, where it is not the field's


def as_option(value: object = NAME_ONLY, name: Optional[str] = None) -> OptionField:
    """A message field that is an option: ``value`` as the door spells that option (``NAME_ONLY``,
    the default: the option's name alone). ``name``: the option, where it is not the field's name
    (a helper that takes the option's name as an argument)."""
    return OptionField(value, name)


def python_spelling(name: str, value: object) -> str:
    return name if value is NAME_ONLY else f"{name}={value!r}"


# (literal text, field name or None, conversion, format spec) of each piece of a template
_Piece = Tuple[str, Optional[str], Optional[str], str]


def _parse(template: str, fields: dict) -> List[_Piece]:
    """The template's pieces, after checking that its fields are exactly ``fields``."""
    try:
        pieces = list(_FORMATTER.parse(template))
    except ValueError as error:
        raise TypeError(f"message template {template!r}: {error} (literal braces are written {_ESCAPED})") from None
    named = []
    for _, field, spec, conversion in pieces:  # (text, field, format spec, conversion), as string.Formatter gives them
        if field is None:
            continue
        if not field.isidentifier():
            raise TypeError(f"message template {template!r}: field {{{field}}} is not a keyword's name")
        if isinstance(fields.get(field), OptionField) and (conversion or spec):
            raise TypeError(f"message template {template!r}: option field {{{field}}} takes no conversion or "
                            "format spec (the door spells it)")
        named.append(field)
    problems = []
    missing, unused = sorted(set(named) - set(fields)), sorted(set(fields) - set(named))
    if missing:
        problems.append(f"no keyword for {', '.join(missing)} (literal braces are written {_ESCAPED})")
    if unused:
        problems.append(f"no field for keyword {', '.join(unused)}")
    if problems:
        raise TypeError(f"message template {template!r}: {'; '.join(problems)}")
    return [(text, field, conversion or None, spec or "") for text, field, spec, conversion in pieces]


class E0Error(Exception):
    """One clear message that names the file or option, the cause and the fix. ``mace-e0`` prints
    it as one line and exits with its class's code; ``mace_run_train`` stops with it before the
    first training step, and logs it after."""

    def __init__(self, message: str, **fields: object):
        self.template = message
        self.fields = fields
        self._pieces = _parse(message, fields) if fields else None  # None: plain text
        super().__init__(self.render(python_spelling))

    @property
    def options(self) -> dict:
        """{option name: value} of the options the message names."""
        return {field.name or name: field.value for name, field in self.fields.items()
                if isinstance(field, OptionField)}

    def render(self, spell: Spelling) -> str:
        """The message with each option in ``spell``'s words and the other fields' values."""
        if self._pieces is None:
            return self.template
        parts = []
        for text, name, conversion, spec in self._pieces:
            parts.append(text)
            if name is None:
                continue
            value = self.fields[name]
            if isinstance(value, OptionField):
                parts.append(spell(value.name or name, value.value))
            else:
                parts.append(_FORMATTER.format_field(_FORMATTER.convert_field(value, conversion), spec))
        return "".join(parts)

    @property
    def message(self) -> str:
        return self.render(python_spelling)

    def __str__(self) -> str:
        return self.message


class E0InputError(E0Error, ValueError):
    """Bad input: a file, an option or the data. A ValueError, so that a notebook loop under
    ``except ValueError`` goes on to its next dataset."""


class E0WriteError(E0Error, OSError):
    """A file could not be written (a full disk, a permission): nothing was written, and any old
    file is unchanged."""


class E0ModelError(E0Error, ValueError):
    """A model or checkpoint that does not fit: not a MACE model with E0s, an energy that is not
    its E0 sum plus an interaction energy, or a checkpoint whose keys are not the model's."""
