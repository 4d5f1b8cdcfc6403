"""python -m mace_e0_plugin: the mace-e0 command."""

import sys

from .doors import main

sys.exit(main())
