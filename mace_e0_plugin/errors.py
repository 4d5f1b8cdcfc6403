"""The errors the plugin raises for a cause it can name, one class per cause under one base,
spelled the way each door names its options.

    E0Error                     catch this to catch them all (a notebook's loop over datasets)
      E0InputError(ValueError)  bad input: a file, an option or the data; the fix is the user's
      E0WriteError(OSError)     a file could not be written; nothing was, and any old file is unchanged
      E0ModelError(ValueError)  a model or checkpoint that does not fit: not a MACE model with E0s,
                                an energy that does not split into E0s and the rest, other keys

A message names options as ``{name}`` fields, with their values given as keywords::

    E0InputError("no config has an energy under {energy_key}", energy_key="REF_energy")

Each door renders it in its own words (``doors.spelling``): ``energy_key='REF_energy'`` from Python,
``--energy-key REF_energy`` in ``mace-e0``, ``--energy_key=REF_energy`` in ``mace_run_train``.
``str(error)`` is the Python spelling, since that is where an uncaught one surfaces.
"""

import re
from typing import Callable

NAME_ONLY = object()  # an option named without a value: "pass {force}" -> "--force"

Spelling = Callable[[str, object], str]  # (option name, value or NAME_ONLY) -> the door's words

_FIELD = re.compile(r"\{(\w+)\}")


def python_spelling(name: str, value: object) -> str:
    return name if value is NAME_ONLY else f"{name}={value!r}"


class E0Error(Exception):
    """One clear message that names the file or option, the cause and the fix. ``mace-e0`` prints
    it as one line and exits with its class's code; ``mace_run_train`` stops with it before the
    first training step, and logs it after."""

    def __init__(self, message: str, **options: object):
        self.template = message
        self.options = options
        super().__init__(self.render(python_spelling))

    def render(self, spell: Spelling) -> str:
        """The message with each option field in ``spell``'s words; other braces are left alone."""
        def field(match: "re.Match") -> str:
            name = match.group(1)
            return spell(name, self.options[name]) if name in self.options else match.group(0)

        return _FIELD.sub(field, self.template)

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
