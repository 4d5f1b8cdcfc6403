"""At the scale of the mission's foundation: a model with MACE-MP-0 medium's architecture (89
elements, 4.7 M parameters, r_max 6 A) and its E0 table, random weights, fine-tuned with
mace_run_train --E0s=linear_system onto CaCO3 + 98 H2O frames (299 atoms, periodic; rank 1 of 4).

The data fix one combination, 196 H + C + 101 O + Ca: the saved E0s must give it the value the data
say (foundation's value plus the mean residual of the foundation's own predictions), change H, C, O
and Ca along it only (the rest is the prior: the foundation's E0s), and leave the 85 other elements'
E0s bit-identical. The saved model carries its provenance, and `mace-e0 check` tells a frame of the
same composition (inside) from one with a water molecule fewer (outside).

--max_num_epochs 0: at this size one training step on two 299-atom frames takes minutes on 2 CPU
cores (forces need a second backward pass), and the E0s are written before the first epoch and are
not trained; the toy-model tests cover E0s that survive epochs. The final error table is skipped
(--skip_evaluate_heads) for the same reason.
"""

import json
import runpy
import sys
from unittest import mock

import ase.io
import numpy as np
import pytest
import torch

from conftest import mace_train, report, saved_e0s, shared_path, write_xyz
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.doors import EXIT_OK, EXIT_OUTSIDE
from mace_e0_plugin.testing import MP0_E0S, MP0_MEDIUM_PARAMETERS, build_mace_mp0_medium_like

pytestmark = [pytest.mark.shared, pytest.mark.slow]

ENERGY_KEY, FORCES_KEY = "rPBE0D3_energy", "rPBE0D3_forces"
CACO3_WATER = {1: 196, 6: 1, 8: 101, 20: 1}  # CaCO3 + 98 H2O
N_TRAIN = 2


def mace_e0(*argv) -> int:
    """`python -m mace_e0_plugin ARGV` (the mace-e0 command) in this process; its exit status."""
    with mock.patch.object(sys, "argv", ["mace-e0", *map(str, argv)]):
        try:
            runpy.run_module("mace_e0_plugin", run_name="__main__", alter_sys=False)
        except SystemExit as done:
            return int(done.code or 0)
    return 0


def without_one_water(atoms):
    """The frame less one O and two H: a composition outside the span of CaCO3 + 98 H2O."""
    oxygen = int(np.flatnonzero(atoms.numbers == 8)[-1])
    hydrogens = [int(i) for i in np.flatnonzero(atoms.numbers == 1)[-2:]]
    smaller = atoms.copy()
    del smaller[[oxygen, *hydrogens]]
    return smaller


def test_mace_mp0_sized_foundation_on_caco3_water_moves_four_e0s_along_the_data_only(tmp_path, capsys):
    frames = ase.io.read(shared_path("data", "caco3-water", "training_set_30_revPBE0_D3.xyz"), ":")
    foundation = build_mace_mp0_medium_like(seed=0, dtype="float64")
    assert sum(p.numel() for p in foundation.parameters()) == MP0_MEDIUM_PARAMETERS
    foundation_path = tmp_path / "mace-mp0-medium-like.model"
    torch.save(foundation, foundation_path)
    train = write_xyz(tmp_path / "train.xyz", frames[:N_TRAIN])
    valid = write_xyz(tmp_path / "valid.xyz", frames[N_TRAIN:N_TRAIN + 1])
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)  # mace 0.3.16 makes it only when saving an epoch's checkpoint
    mace_train(["--name", "ft", "--work_dir", str(work), "--seed", "1", "--foundation_model", str(foundation_path),
                "--train_file", str(train), "--valid_file", str(valid), "--energy_key", ENERGY_KEY,
                "--forces_key", FORCES_KEY, "--max_num_epochs", "0", "--batch_size", "2", "--valid_batch_size", "2",
                "--device", "cpu", "--default_dtype", "float64", "--E0s", "linear_system", "--E0s_refit", "none",
                "--multiheads_finetuning", "False", "--foundation_model_elements", "True", "--plot", "False",
                "--skip_evaluate_heads", "Default"])

    head = report(work)["heads"]["Default"]
    assert (head["rank"], head["n_elements"], head["n_configs"]) == (1, 4, N_TRAIN)
    assert head["determined_combinations"] == ["196 H + C + 101 O + Ca"]

    numbers = foundation.atomic_numbers.tolist()
    assert numbers == sorted(MP0_E0S) and len(numbers) == 89
    before = foundation.atomic_energies_fn.atomic_energies.detach().double()[0]
    after = saved_e0s(work / "ft.model")[0]
    data = [numbers.index(z) for z in CACO3_WATER]
    others = [i for i in range(len(numbers)) if i not in data]
    assert len(others) == 85 and torch.equal(after[others], before[others])

    # The determined combination takes the value the data give it: the foundation's value plus the
    # mean residual of the foundation's own predictions (every frame has the same composition).
    combination = torch.tensor([float(n) for n in CACO3_WATER.values()], dtype=torch.float64)
    predicted = synthetic.predict_energies(foundation, frames[:N_TRAIN], batch_size=N_TRAIN)
    mean_residual = float(np.mean([a.info[ENERGY_KEY] - e for a, e in zip(frames[:N_TRAIN], predicted)]))
    # The hook's pass is float32 by default (MP-0-sized users get that); the foundation's own float64
    # predictions give the value it must be within 1e-4 eV of.
    assert float(combination @ after[data]) == pytest.approx(float(combination @ before[data]) + mean_residual, abs=1e-4)
    assert head["pass_dtype"] == "float32"
    assert abs(mean_residual) > 1e3  # random weights and MP's E0s against revPBE0-D3: a big move to check
    # ...and outside it the E0s stay the prior's (the foundation's): the change lies along it.
    change = after[data] - before[data]
    along = (change @ combination) / (combination @ combination) * combination
    assert torch.allclose(change, along, atol=1e-9, rtol=0)
    assert head["E0s"] == pytest.approx({str(z): e for z, e in zip(numbers, after.tolist())}, abs=1e-9)

    saved = torch.load(work / "ft.model", weights_only=False)
    provenance = json.loads(saved.e0_provenance)["heads"]["Default"]
    assert provenance["rank"] == 1 and provenance["present_elements"] == sorted(CACO3_WATER)
    assert provenance["determined_combinations"] == [[[float(n), z] for z, n in CACO3_WATER.items()]]
    capsys.readouterr()
    assert mace_e0("show", work / "ft.model") == 0
    assert "E0 provenance: linear_system, rank 1 of 4" in capsys.readouterr().out

    same = write_xyz(tmp_path / "same.xyz", frames[10:12])
    assert mace_e0("check", work / "ft.model", same) == EXIT_OK
    other = write_xyz(tmp_path / "other.xyz", [frames[10], without_one_water(frames[11])])
    assert mace_e0("check", work / "ft.model", other, "--output", tmp_path / "check.json") == EXIT_OUTSIDE
    checked = json.loads((tmp_path / "check.json").read_text())["heads"]["Default"]
    assert checked["n_configs"] == 2 and checked["n_outside"] == 1
