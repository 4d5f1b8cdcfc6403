"""The README's `mace-e0 diagnose` example: a colleague's potential with two planted faults.

    python examples/diagnose_example.py [OUTDIR]     (about a minute on CPU, nothing downloaded)

The data are the small synthetic foundation's own energies and forces, with a little noise (so
that model is right on them to within the noise), except that oxygen's reference forces are
scaled by FORCE_FACTOR: forces from another level, or in other units. The colleague's model is the same network with the E0s of H and O off by
E0_ERRORS. `mace-e0 diagnose` should say: E0 mismatch for H and O (the data ask for -E0_ERRORS),
force scale off for O (slope 1 / FORCE_FACTOR), nothing for C. The figure goes to
examples/diagnose.png.
"""

import copy
import os
import shutil
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import torch

from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.doors import main as mace_e0
from mace_e0_plugin.glue import model_atomic_numbers, read_e0s, write_e0s

E0_ERRORS = {1: 0.15, 8: -0.4}  # eV added to the colleague's E0s of H and O
FORCE_FACTOR = 1.1  # oxygen's reference forces, times this
# Noise on the labels, as any real model has against its reference: eV per sqrt(atom) on energies
# (about 3 meV/atom on these clusters), eV/A on force components.
ENERGY_NOISE = 0.01
FORCE_NOISE = 0.005
FIGURE = Path(__file__).resolve().parent / "diagnose.png"


def planted_case(folder: Path) -> None:
    foundation = synthetic.build_foundation(synthetic.LEVEL_A.e0s, seed=7)
    # Mixed clusters, plus a few pure ones of each element: the pure ones show a mismatched E0 whole.
    configs = synthetic.random_configs(60, seed=3)
    for z in synthetic.ELEMENTS:
        configs += synthetic.random_configs(4, seed=z, elements=(z,))
    synthetic.label_with_model(foundation, configs)
    rng = np.random.default_rng(0)
    for atoms in configs:
        atoms.arrays["REF_forces"][atoms.numbers == 8] *= FORCE_FACTOR
        atoms.arrays["REF_forces"] += FORCE_NOISE * rng.standard_normal(atoms.arrays["REF_forces"].shape)
        atoms.info["REF_energy"] += ENERGY_NOISE * np.sqrt(len(atoms)) * rng.standard_normal()
    ase.io.write(folder / "data.xyz", configs)

    colleague = copy.deepcopy(foundation)
    numbers = model_atomic_numbers(colleague)
    write_e0s(colleague, 0, [e0 + E0_ERRORS.get(z, 0.0) for z, e0 in zip(numbers, read_e0s(colleague, 0))])
    torch.save(colleague, folder / "colleague.model")

    # Isolated atoms at the data's level: in this toy world, the foundation's own E0s.
    isolated = synthetic.isolated_atoms(synthetic.LEVEL_A)
    ase.io.write(folder / "isolated_atoms.xyz", isolated)


def main(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    planted_case(folder)
    argv = ["diagnose", "colleague.model", "data.xyz", "--energy-key", "REF_energy", "--forces-key",
            "REF_forces", "--prior", "isolated_atoms.xyz", "--output", "diag.json",
            "--plot", "diagnose.png"]
    print("$ mace-e0 " + " ".join(argv))
    here = Path.cwd()
    try:
        os.chdir(folder)
        status = mace_e0(argv + ["--device", "cpu", "--force"])
    finally:
        os.chdir(here)
    print(f"(exit status {status})")
    shutil.copyfile(folder / "diagnose.png", FIGURE)
    return status


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="mace_e0_diagnose_"))
    main(target)
