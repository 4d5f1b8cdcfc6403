"""``mace-e0``, the command (also ``python -m mace_e0_plugin``).

mace prints a line while it is imported (``mace.tools.cg``: the cuequivariance notice), before any
command runs, and the doors import mace. So this module, alone, imports them late: under a redirect
of stdout, whose text is shown only with ``--verbose``. Warnings while the command runs are the
doors' affair (``doors._cli``).
"""

import contextlib
import io
import sys
from typing import List, Optional

from ._noise import hidden_warnings

VERBOSE = "--verbose"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = VERBOSE in argv
    printed = io.StringIO()
    with hidden_warnings(verbose), contextlib.redirect_stdout(printed):
        from .doors import main as mace_e0  # pylint: disable=import-outside-toplevel  (see above)
    if verbose:
        sys.stdout.write(printed.getvalue())
    return mace_e0(argv)


if __name__ == "__main__":
    sys.exit(main())
