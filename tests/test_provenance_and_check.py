"""E0 provenance in the model (apply REPORT.json, fine-tunes), ``mace-e0 show``'s line, and
``mace-e0 check``: which configs lie outside the element combinations the E0s were fitted on."""

import copy
import json

import ase
import ase.io
import pytest
import torch

from conftest import SHIFTS, finetune_argv, mace_train, planted_configs, report, write_xyz
from mace_e0_plugin import check_e0s
from mace_e0_plugin.doors import EXIT_OUTSIDE, main
from mace_e0_plugin.glue import ATTRIBUTE, read_provenance

WATER = {1: 2, 8: 1}


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def molecules(path, carbon=True):
    """OH, H2O, H3O and (with ``carbon``) CH4: by hand, against the span of 2 H + O, outside parts
    (-0.2, 0, 0.4), none, (0.2, 0, -0.4) and (0.8, 1, -1.6) atoms of (H, C, O)."""
    frames = [ase.Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]]),
              ase.Atoms("OH2", positions=[[0, 0, 0], [0, 0.76, 0.59], [0, -0.76, 0.59]]),
              ase.Atoms("OH3", positions=[[0, 0, 0], [0, 0.9, 0.3], [0, -0.9, 0.3], [0.9, 0, 0.3]]),
              ase.Atoms("CH4", positions=[[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [0.6, -0.6, -0.6],
                                          [-0.6, 0.6, -0.6]])]
    return write_xyz(path, frames if carbon else frames[:3])


@pytest.fixture
def water_model(foundation, tmp_path, capsys):
    """The foundation with E0s re-estimated on water only (rank 1 of 2), applied from the report."""
    water = write_xyz(tmp_path / "water.xyz", planted_configs(foundation, 20, seed=5, stoichiometry=WATER))
    estimate = tmp_path / "estimate.json"
    assert cli(capsys, "estimate", foundation.path, water, "--energy-key", "REF_energy", "--output", estimate)[0] == 0
    model = tmp_path / "water.model"
    code, out, _ = cli(capsys, "apply", foundation.path, estimate, "--output", model)
    assert code == 0 and "with the report's E0 provenance" in out
    return model, water, json.loads(estimate.read_text())["heads"]["Default"]


def test_apply_report_records_provenance_and_show_prints_it(water_model, foundation, capsys):
    model, _, estimate = water_model
    provenance = read_provenance(torch.load(model, weights_only=False))["Default"]
    assert provenance["rank"] == 1 and provenance["n_elements"] == 2 and provenance["n_configs"] == 20
    assert provenance["determined_combinations"] == [[[2.0, 1], [1.0, 8]]]
    assert provenance["prior"] == {"kind": "foundation", "source": "the foundation model's E0s"}
    assert provenance["method"] == "linear_system" and provenance["weighting"] == "per_atom"
    saved = torch.load(model, weights_only=False).atomic_energies_fn.atomic_energies[0].tolist()
    assert saved == [estimate["E0s"][z] for z in ("1", "6", "8")]
    # Water alone fixes 2 E0(H) + E0(O) only: the planted shifts along it, the prior along the rest.
    assert 2 * saved[0] + saved[2] == pytest.approx(
        2 * (foundation.e0s[1] + SHIFTS[1]) + foundation.e0s[8] + SHIFTS[8], abs=1e-6)

    code, out, _ = cli(capsys, "show", model)
    line = next(line.strip() for line in out.splitlines() if "E0 provenance" in line)
    assert code == 0 and line.startswith("E0 provenance: linear_system, rank 1 of 2, prior the foundation model's E0s")
    assert "determined 2 H + O" in line and "20 configs" in line and "0 refits" in line
    assert "E0 provenance: none" in cli(capsys, "show", foundation.path)[1]


def test_check_finds_the_configs_whose_energies_rest_on_the_prior(water_model, tmp_path, capsys):
    model, water, _ = water_model
    output = tmp_path / "check.json"
    code, out, _ = cli(capsys, "check", model, molecules(tmp_path / "ions.xyz"), "--output", output)
    assert code == EXIT_OUTSIDE and "3 of 4 configs lie outside" in out and "only the foundation's E0s" in out

    result = json.loads(output.read_text())
    head = result["heads"]["Default"]
    assert (head["n_configs"], head["n_outside"], head["prior_is_isolated_atoms"]) == (4, 3, False)
    assert [e["config"].rsplit(":", 1)[1] for e in head["examples"]] == ["0", "2", "3"]
    outside = [e["outside_atoms"] for e in head["examples"]]
    assert outside[0] == pytest.approx({"H": -0.2, "O": 0.4})
    assert outside[1] == pytest.approx({"H": 0.2, "O": -0.4})
    assert outside[2] == pytest.approx({"H": 0.8, "C": 1.0, "O": -1.6})
    # The same from Python, and the training data themselves lie inside: exit 0.
    assert check_e0s(torch.load(model, weights_only=False), [str(tmp_path / "ions.xyz")]) == result
    code, out, _ = cli(capsys, "check", model, water)
    assert code == 0 and "0 of 20 configs lie outside" in out


def test_check_without_provenance_says_so_in_one_line(water_model, foundation, tmp_path, capsys):
    model, water, _ = water_model
    code, _, err = cli(capsys, "check", foundation.path, water)
    assert code == 2 and err.count("\n") == 1 and "no E0 provenance for head 'Default'" in err
    # A plain {Z: eV} file says nothing of its origin: apply drops the provenance it replaces.
    e0s = tmp_path / "e0s.json"
    e0s.write_text(json.dumps({"1": -13.0}))
    plain = tmp_path / "plain.model"
    assert cli(capsys, "apply", model, e0s, "--output", plain)[0] == 0
    assert read_provenance(torch.load(plain, weights_only=False)) == {}
    assert cli(capsys, "check", plain, water)[0] == 2


def test_provenance_survives_mace_saving_loading_compiling_and_calculators(water_model, tmp_path):
    from e3nn.util import jit
    from mace.calculators import MACECalculator

    model_path, _, _ = water_model
    model = torch.load(model_path, weights_only=False)
    expected = getattr(model, ATTRIBUTE)
    assert json.loads(expected)["heads"]["Default"]["rank"] == 1
    # What mace_run_train does to save: deepcopy, torch.save, and TorchScript for *_compiled.model.
    torch.save(copy.deepcopy(model), tmp_path / "copy.model")
    assert getattr(torch.load(tmp_path / "copy.model", weights_only=False), ATTRIBUTE) == expected
    torch.jit.save(jit.compile(copy.deepcopy(model)), str(tmp_path / "compiled.model"))
    assert getattr(torch.jit.load(str(tmp_path / "compiled.model")), ATTRIBUTE) == expected

    atoms = ase.io.read(tmp_path / "water.xyz", "0")
    calculator = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    atoms.calc = calculator
    from mace import data
    from mace.tools import torch_geometric
    from mace.tools.utils import AtomicNumberTable

    from mace_e0_plugin.glue import default_dtype

    config = data.config_from_atoms(atoms)
    with default_dtype(torch.float64):  # the model's dtype
        graph = data.AtomicData.from_config(config, z_table=AtomicNumberTable([1, 6, 8]), cutoff=float(model.r_max),
                                            heads=["Default"])
    batch = next(iter(torch_geometric.dataloader.DataLoader([graph], batch_size=1)))
    direct = model(batch.to_dict(), training=False, compute_force=False)["energy"].item()
    assert atoms.get_potential_energy() == pytest.approx(direct, abs=1e-8)
    assert atoms.get_potential_energy() != pytest.approx(
        model_energy_with_foundation_e0s(direct, atoms, model), abs=1e-3)  # the new E0s are in use


def model_energy_with_foundation_e0s(direct, atoms, model):
    from mace_e0_plugin import testing as synthetic

    new = dict(zip([1, 6, 8], model.atomic_energies_fn.atomic_energies[0].tolist()))
    return direct + sum(synthetic.LEVEL_A.e0s[z] - new[z] for z in atoms.numbers)


@pytest.mark.slow
def test_a_water_only_finetune_saves_its_provenance_in_every_model(foundation, tmp_path, capsys):
    train = write_xyz(tmp_path / "water.xyz", planted_configs(foundation, 20, seed=8, stoichiometry=WATER))
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, train, work, "--E0s_refit", "epoch+final", "--plot", "False"))

    content = report(work)
    head = content["heads"]["Default"]
    assert head["prior"]["kind"] == "foundation" and head["determined_coefficients"] == [[[2.0, 1], [1.0, 8]]]
    for saved in (torch.load(work / "ft.model", weights_only=False), torch.jit.load(str(work / "ft_compiled.model"))):
        provenance = read_provenance(saved)["Default"]
        assert (provenance["rank"], provenance["n_elements"], provenance["n_refits"]) == (1, 2, 2)
        assert provenance["n_configs"] == head["n_configs"] == 18  # valid_fraction 0.1 of 20
    # The fine-tuned model knows H and O only (mace builds it on the data's elements).
    output = tmp_path / "check.json"
    code, out, _ = cli(capsys, "check", work / "ft.model", molecules(tmp_path / "ions.xyz", carbon=False),
                       "--output", output)
    assert code == EXIT_OUTSIDE and "2 of 3 configs lie outside" in out
    examples = json.loads(output.read_text())["heads"]["Default"]["examples"]
    assert [e["outside_atoms"] for e in examples] == [pytest.approx({"H": -0.2, "O": 0.4}),
                                                      pytest.approx({"H": 0.2, "O": -0.4})]
