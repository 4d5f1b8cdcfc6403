"""Write the toy data of the example fine-tune: two 'levels of theory' of the same clusters.

    python examples/make_toy_data.py OUTDIR

level_a_train.xyz  300 random H/C/O clusters at toy level A, plus its isolated atoms: trains the
                   small foundation model.
level_b_train.xyz  60 clusters at toy level B, whose E0s are shifted per element and whose pair
level_b_test.xyz   term is 6% stronger: the new level of theory to fine-tune to (40 more to test).
true_shifts.json   level B's E0s minus level A's, to compare with what the plugin estimates.
"""

import json
import sys
from pathlib import Path

import ase.io

try:
    from mace_e0_plugin import testing as synthetic
except ImportError:  # before the layout of issue 14
    from mace_e0_plugin import synthetic


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    level_a = synthetic.label(synthetic.random_configs(300, seed=1), synthetic.LEVEL_A)
    ase.io.write(folder / "level_a_train.xyz", synthetic.isolated_atoms(synthetic.LEVEL_A) + level_a)
    level_b = synthetic.label(synthetic.random_configs(100, seed=2), synthetic.LEVEL_B)
    ase.io.write(folder / "level_b_train.xyz", level_b[:60])
    ase.io.write(folder / "level_b_test.xyz", level_b[60:])
    shifts = {str(z): synthetic.LEVEL_B.e0s[z] - synthetic.LEVEL_A.e0s[z] for z in synthetic.ELEMENTS}
    (folder / "true_shifts.json").write_text(json.dumps(shifts, indent=2) + "\n")
    print(f"wrote toy data to {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "toy_run"))
