"""The one exception the plugin raises for bad input, spelled the way each door names its options.

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


class E0InputError(ValueError):
    """Bad input for the E0 estimate: one clear message that names the file or option and the fix.

    A ValueError, so that a notebook loop under ``except ValueError`` goes on to its next dataset;
    ``mace-e0`` prints it as one line and exits 2, and ``mace_run_train`` stops before the first
    step with it (``training`` turns it into a SystemExit there).
    """

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
