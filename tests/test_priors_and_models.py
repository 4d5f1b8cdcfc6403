"""Prior files, and reading and writing E0 rows of MACE models of either layout."""

import json

import ase
import ase.io
import pytest
import torch

from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.errors import E0InputError
from mace_e0_plugin.glue import read_e0s, select_head, write_e0s
from mace_e0_plugin.io import prior_vector, read_prior_file


def test_json_prior_accepts_atomic_numbers_and_symbols(tmp_path):
    path = tmp_path / "e0s.json"
    path.write_text(json.dumps({"1": -13.6, "O": -2041.8, "20": -18420}))
    assert read_prior_file(str(path), None) == {1: -13.6, 8: -2041.8, 20: -18420.0}


def test_isolated_atom_prior_reads_single_atom_frames_with_the_energy_key(tmp_path):
    frames = synthetic.isolated_atoms(synthetic.LEVEL_B, energy_key="DFT_energy")
    molecule = ase.Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], info={"DFT_energy": -31.0})
    path = tmp_path / "isolated.xyz"
    ase.io.write(path, frames + [molecule])
    assert read_prior_file(str(path), "DFT_energy") == synthetic.LEVEL_B.e0s


def test_isolated_atoms_under_another_key_are_refused_naming_the_keys_they_have(tmp_path):
    # Another key may hold another level of theory's energies: the training key, or one clear error.
    frames = synthetic.isolated_atoms(synthetic.LEVEL_B, energy_key="REF_energy")
    path = tmp_path / "isolated.xyz"
    ase.io.write(path, frames)
    with pytest.raises(E0InputError) as error:
        read_prior_file(str(path), "DFT_energy")
    message = error.value.message
    assert message.startswith(f"prior={str(path)!r}: the isolated H atom has no finite energy under key 'DFT_energy'")
    assert "'REF_energy'" in message and "\n" not in message
    assert read_prior_file(str(path), "REF_energy") == synthetic.LEVEL_B.e0s


def test_conflicting_isolated_atom_energies_are_refused(tmp_path):
    frames = synthetic.isolated_atoms(synthetic.LEVEL_B)
    frames[1].info["REF_energy"] += 1.0
    path = tmp_path / "isolated.xyz"
    ase.io.write(path, synthetic.isolated_atoms(synthetic.LEVEL_B) + frames[1:2])
    with pytest.raises(E0InputError, match="two different energies for the isolated C atom"):
        read_prior_file(str(path), "REF_energy")


def test_prior_vector_falls_back_per_element():
    values, fell_back = prior_vector([1, 6, 8], {1: -1.0, 8: -8.0}, {1: 9.0, 6: -6.0, 8: 9.0})
    assert values == [-1.0, -6.0, -8.0] and fell_back == [6]


def test_rows_of_a_multihead_model_are_read_and_written_one_head_at_a_time():
    model = synthetic.build_foundation({1: -1.0, 8: -8.0}, heads=("pt_head", "dft"))
    assert write_e0s(model, select_head(model.heads, "dft"), [-2.0, -9.0]) == 1
    assert model.atomic_energies_fn.atomic_energies.tolist() == [[-1.0, -8.0], [-2.0, -9.0]]
    assert read_e0s(model, 1) == [-2.0, -9.0]
    assert select_head(model.heads, None) == 1  # mace's default: the first head that is not pt_head
    with pytest.raises(E0InputError, match="no such head; its heads are pt_head, dft"):
        select_head(model.heads, "mp2")


def test_rows_of_an_old_single_head_model():
    model = synthetic.build_foundation({1: -1.0, 8: -8.0})
    block = model.atomic_energies_fn
    block.atomic_energies = torch.tensor([-1.0, -8.0], dtype=torch.float64)  # 1-D, as before heads
    write_e0s(model, 0, [-3.0, -4.0])
    assert read_e0s(model, 0) == [-3.0, -4.0]
    with pytest.raises(ValueError, match="single head"):
        read_e0s(model, 1)
