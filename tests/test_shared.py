"""Real fine-tunes with real pretrained MACE models and real data from ../shared (skipped without it).

- mace_spice_15el.model (SPICE, old single-head format) onto CaCO3 + 98 H2O at revPBE0-D3:
  every frame has the same stoichiometry, rank 1 of 4.
- mace01_cho_xtb.model (GFN2-xTB) onto the ECEMC set at DFT: a real xTB -> DFT change, whose
  training file carries DFT isolated-atom energies.
"""

import ase.io
import numpy as np
import pytest
import torch

from conftest import mace_train, report, saved_e0s, shared_path, write_xyz
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.glue import model_atomic_numbers

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def common_argv(foundation, train, work, energy_key, *extra):
    return ["--name", "ft", "--work_dir", str(work), "--seed", "1", "--foundation_model", str(foundation),
            "--train_file", str(train), "--energy_key", energy_key, "--E0s", "linear_system",
            "--max_num_epochs", "1", "--batch_size", "10", "--valid_batch_size", "10",
            "--device", "cpu", "--default_dtype", "float64", *extra]


def test_spice_foundation_on_caco3_water_is_rank_one_and_anchored_to_its_e0s(tmp_path):
    foundation_path = shared_path("models", "mace_spice_15el.model")
    train = shared_path("data", "caco3-water", "training_set_30_revPBE0_D3.xyz")
    work = tmp_path / "run"
    mace_train(common_argv(foundation_path, train, work, "rPBE0D3_energy", "--forces_key", "rPBE0D3_forces",
                           "--valid_fraction", "0.1"))

    head = report(work)["heads"]["Default"]
    assert head["rank"] == 1 and head["n_elements"] == 4 and head["n_configs"] == 27
    assert head["determined_combinations"] == ["196 H + C + 101 O + Ca"]
    assert head["rmse_per_atom_after_meV"] < 1e-3 * head["rmse_per_atom_before_meV"]

    foundation = torch.load(foundation_path, weights_only=False)
    start = dict(zip(model_atomic_numbers(foundation), foundation.atomic_energies_fn.atomic_energies.double().tolist()))
    elements = [1, 6, 8, 20]
    prior = np.array([start[z] for z in elements])
    assert np.allclose([head["prior_E0s"][str(z)] for z in elements], prior)
    new = np.array([head["E0s"][str(z)] for z in elements])
    composition = np.array([196.0, 1.0, 101.0, 1.0])
    change = new - prior
    assert np.allclose(change, (change @ composition) / (composition @ composition) * composition, atol=1e-8)
    # Buffers are not trained: the saved model carries exactly the reported E0s.
    assert np.allclose(saved_e0s(work / "ft.model")[0].numpy(), new, atol=1e-9, rtol=0)


def test_xtb_foundation_to_dft_satisfies_the_normal_equations(tmp_path):
    foundation_path = shared_path("models", "mace01_cho_xtb.model")
    frames = ase.io.read(shared_path("data", "ecemc-dft", "ECEMC.xyz"), ":")
    isolated = [a for a in frames if a.info.get("config_type") == "IsolatedAtom"]
    molecules = [a for a in frames if len(a) > 1]
    train = write_xyz(tmp_path / "train.xyz", isolated + molecules[:60])
    valid = write_xyz(tmp_path / "valid.xyz", molecules[60:64])
    work = tmp_path / "run"
    # Learning rate 0: the run goes through a real epoch, but the saved model is the one the E0s
    # were fitted for, so its residuals can be checked against the least-squares conditions.
    mace_train(common_argv(foundation_path, train, work, "REF_energy", "--valid_file", str(valid),
                           "--forces_weight", "0", "--lr", "0"))

    head = report(work)["heads"]["Default"]
    assert head["n_configs"] == 60 and head["rank"] == 1 and head["n_elements"] == 3
    isolated_e0s = {int(a.numbers[0]): a.info["REF_energy"] for a in isolated}
    assert head["prior_E0s"] == {str(z): e for z, e in sorted(isolated_e0s.items())}

    model = torch.load(work / "ft.model", weights_only=False)
    predicted = np.array(synthetic.predict_energies(model, molecules[:60]))
    reference = np.array([a.info["REF_energy"] for a in molecules[:60]])
    counts = np.array([[np.sum(a.numbers == z) for z in (1, 6, 8)] for a in molecules[:60]], dtype=float)
    weights = 1.0 / counts.sum(1) ** 2
    # Normal equations A^T W (E_ref - E_model) = 0: the fit is at its least-squares optimum.
    gradient = counts.T @ (weights * (reference - predicted))
    assert np.abs(gradient).max() < 1e-8 * np.abs(counts.T @ (weights * reference)).max()
    # And off the data's one direction, the E0s are the DFT isolated atoms'.
    new = np.array([head["E0s"][str(z)] for z in (1, 6, 8)])
    change = new - np.array([isolated_e0s[z] for z in (1, 6, 8)])
    direction = counts[0] / np.linalg.norm(counts[0])
    assert np.allclose(change, (change @ direction) * direction, atol=1e-8)
