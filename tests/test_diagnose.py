"""mace-e0 diagnose / diagnose_e0s on planted faults: data labelled by the foundation itself (so the
unshifted model is exact), a copy of it with known E0 errors, and one element's reference forces
scaled by a known factor. The diagnosis must recover both exactly and flag exactly those elements."""

import copy
import json

import pytest
import torch

from conftest import write_xyz
from mace_e0_plugin import E0InputError, diagnose_e0s
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.doors import EXIT_FLAGGED, main
from mace_e0_plugin.math import (ENERGY_CORRECTION_THRESHOLD, FORCE_SLOPE_TOLERANCE, ForceSlopeStatistics,
                                         energy_is_off, energy_z, force_slope, slope_is_off)
from mace_e0_plugin.glue import read_e0s, write_e0s

E0_ERRORS = {1: 0.15, 6: 0.0, 8: -0.4}  # eV added to the E0s of the "colleague's" copy
FORCE_FACTOR = 1.1  # oxygen's reference forces, times this
SCALED = 8
ISOLATED = {1: -13.0, 6: -1030.25, 8: -2040.0}  # made-up isolated-atom energies, eV
ENTRY_KEYS = {"symbol", "energy_correction", "energy_standard_error", "energy_z", "force_slope",
              "force_slope_standard_error", "force_rmse", "n_force_components", "model_E0", "prior_E0"}


@pytest.fixture(scope="module")
def case(foundation, tmp_path_factory):
    """data.xyz (O forces scaled), clean.xyz (unscaled), water.xyz (one stoichiometry), and the
    colleague's model with E0_ERRORS, in one folder."""
    folder = tmp_path_factory.mktemp("diagnose")
    configs = synthetic.random_configs(30, seed=21)
    for z in synthetic.ELEMENTS:  # pure configs too: they show a wrong E0 undiluted
        configs += synthetic.random_configs(2, seed=100 + z, elements=(z,))
    synthetic.label_with_model(foundation.model, configs)
    write_xyz(folder / "clean.xyz", configs)
    scaled = [atoms.copy() for atoms in configs]
    for atoms in scaled:
        atoms.arrays["REF_forces"][atoms.numbers == SCALED] *= FORCE_FACTOR
    write_xyz(folder / "data.xyz", scaled)
    water = synthetic.label_with_model(foundation.model,
                                       synthetic.random_configs(12, seed=5, stoichiometry={1: 2, 8: 1}))
    write_xyz(folder / "water.xyz", water)

    colleague = copy.deepcopy(foundation.model)
    write_e0s(colleague, 0, [foundation.e0s[z] + E0_ERRORS[z] for z in sorted(foundation.e0s)])
    torch.save(colleague, folder / "colleague.model")
    (folder / "isolated.json").write_text(json.dumps({str(z): e for z, e in ISOLATED.items()}))
    n_oxygen = sum(int((atoms.numbers == SCALED).sum()) for atoms in configs)
    return folder, colleague, scaled, water, n_oxygen


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_recovers_the_planted_faults(head, n_oxygen):
    elements = head["elements"]
    assert set(elements) == {"1", "6", "8"} and all(set(e) == ENTRY_KEYS for e in elements.values())
    for z, error in E0_ERRORS.items():
        assert elements[str(z)]["energy_correction"] == pytest.approx(-error, abs=1e-6)
        assert elements[str(z)]["energy_standard_error"] < 1e-6  # the data are exact
    assert abs(elements["1"]["energy_z"]) > 1e6 and abs(elements["8"]["energy_z"]) > 1e6
    # extxyz keeps forces to 1e-8 eV/A: that, not the method, sets the tolerance
    assert 1.0 / elements["8"]["force_slope"] == pytest.approx(FORCE_FACTOR, rel=1e-6)
    assert elements["1"]["force_slope"] == pytest.approx(1.0, abs=1e-6)
    assert elements["6"]["force_slope"] == pytest.approx(1.0, abs=1e-6)
    assert elements["8"]["n_force_components"] == 3 * n_oxygen
    assert elements["1"]["force_rmse"] < 1e-7 < 1e-3 < elements["8"]["force_rmse"]
    assert head["flagged"] == {"energy": ["H", "O"], "forces": ["O"]}
    assert head["rank"] == 3 and head["determined_combinations"] == []


def test_cli_recovers_planted_e0_errors_and_force_scale(foundation, case, capsys):
    folder, _, _, _, n_oxygen = case
    output, figure = folder / "diag.json", folder / "diag.png"
    code, out, _ = cli(capsys, "diagnose", folder / "colleague.model", folder / "data.xyz", "--energy-key",
                       "REF_energy", "--forces-key", "REF_forces", "--prior", folder / "isolated.json",
                       "--output", output, "--plot", figure, "--batch-size", 7, "--dtype", "float64")
    assert code == EXIT_FLAGGED
    content = json.loads(output.read_text())
    assert set(content) == {"heads"} and set(content["heads"]) == {"Default"}
    head = content["heads"]["Default"]
    assert set(head) == {"elements", "flagged", "rank", "determined_combinations", "verdict", "prior",
                         "suspicious_configs"}
    assert head["prior"] == {"kind": "e0s_file", "source": str(folder / "isolated.json")}
    assert head["suspicious_configs"] == []  # exact data: the faults are per element, no label is broken
    assert_recovers_the_planted_faults(head, n_oxygen)
    for z, element in head["elements"].items():  # model E0 - prior: the E0 error plus ISOLATED's offset
        expected = foundation.e0s[int(z)] + E0_ERRORS[int(z)] - ISOLATED[int(z)]
        assert element["model_E0"] - element["prior_E0"] == pytest.approx(expected, abs=1e-9)
    # The verdict names the faults and the commands that fix the E0s, for these very files.
    assert "E0 MISMATCH" in out and "FORCE SCALE" in out and out.count("*") >= 3
    assert f"mace-e0 estimate {folder / 'colleague.model'} {folder / 'data.xyz'} --energy-key REF_energy" in out
    assert "mace-e0 apply" in out and "--E0s=linear_system" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000


def test_python_function_takes_modules_and_atoms_and_restores_the_dtype(foundation, case):
    _, colleague, scaled, _, n_oxygen = case
    before = read_e0s(colleague, 0)
    previous = torch.get_default_dtype()  # other tests (mace-e0 in this process) may have changed it
    torch.set_default_dtype(torch.float32)
    try:
        result = diagnose_e0s(colleague, scaled, energy_key="REF_energy", forces_key="REF_forces",
                              prior=synthetic.isolated_atoms(synthetic.LEVEL_B), dtype="float64")
        assert torch.get_default_dtype() == torch.float32 and read_e0s(colleague, 0) == before
    finally:
        torch.set_default_dtype(previous)
    head = result["heads"]["Default"]
    assert_recovers_the_planted_faults(head, n_oxygen)
    assert {z: e["prior_E0"] for z, e in head["elements"].items()} == {
        str(z): synthetic.LEVEL_B.e0s[z] for z in synthetic.ELEMENTS}
    assert "mace-e0 estimate MODEL DATA --energy-key REF_energy" in head["verdict"]


def test_the_exact_model_on_clean_data_flags_nothing_and_exits_0(foundation, case, capsys):
    folder = case[0]
    code, out, _ = cli(capsys, "diagnose", foundation.path, folder / "clean.xyz", "--energy-key", "REF_energy",
                       "--forces-key", "REF_forces", "--output", folder / "clean.json")
    assert code == 0 and "No E0 mismatch and no per-element force scale found" in out
    head = json.loads((folder / "clean.json").read_text())["heads"]["Default"]
    assert head["flagged"] == {"energy": [], "forces": []}
    for element in head["elements"].values():
        assert element["energy_correction"] == pytest.approx(0.0, abs=1e-6)
        assert element["force_slope"] == pytest.approx(1.0, abs=1e-6)
        assert element["prior_E0"] is None  # no prior but the model's own E0s


def test_rank_deficient_data_give_null_z_and_the_determined_combination(case):
    folder, colleague, _, water, _ = case
    head = diagnose_e0s(colleague, water, energy_key="REF_energy", forces_key="REF_forces")["heads"]["Default"]
    assert head["rank"] == 1 and head["determined_combinations"] == ["2 H + O"]
    assert head["elements"]["1"]["energy_z"] is None and head["elements"]["8"]["energy_z"] is None
    assert head["elements"]["6"]["energy_correction"] is None  # no carbon in the data
    assert head["elements"]["6"]["n_force_components"] == 0 and head["elements"]["6"]["force_slope"] is None
    assert head["flagged"] == {"energy": [], "forces": []}
    # Along 2 H + O the data ask for -(2 * 0.15 - 0.4) = +0.1 eV, and the verdict says so.
    along = -(2 * E0_ERRORS[1] + E0_ERRORS[8])
    assert "RANK-DEFICIENT" in head["verdict"] and f"E0(2 H + O) {along:+.4f} eV" in head["verdict"]


def test_bad_input_and_existing_outputs_get_one_line_and_exit_2(case, capsys):
    folder = case[0]
    command = ["diagnose", folder / "colleague.model", folder / "data.xyz", "--energy-key", "REF_energy"]
    existing = folder / "existing.json"
    existing.write_text("{}")
    code, _, err = cli(capsys, *command, "--forces-key", "REF_forces", "--output", existing)
    assert code == 2 and err.strip() == f"mace-e0: error: {existing} exists; pass --force to write over it."
    assert existing.read_text() == "{}"
    code, _, err = cli(capsys, *command, "--forces-key", "DFT_forces")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no config has forces under --forces-key DFT_forces" in err and "REF_forces" in err


@pytest.mark.parametrize("argument, value, says", [
    ("dtype", "float16", "dtype='float16': use float32 or float64."),
    ("batch_size", 0, "batch_size=0: must be a positive integer."),
    ("num_workers", -1, "num_workers=-1: must be an integer, 0 or more."),
])
def test_the_python_function_checks_its_options_like_the_other_doors(argument, value, says):
    """Before anything is read: the model and data are never looked at."""
    with pytest.raises(E0InputError) as error:
        diagnose_e0s("no-such.model", ["no-such.xyz"], "REF_energy", **{argument: value})
    assert str(error.value) == says


def test_the_planted_labels_are_what_maces_own_calculator_gives(foundation):
    """The labels the faults are planted on come from the model through mace's MACECalculator too,
    not only through the batched pass (which shares mace's call convention with diagnose)."""
    import numpy as np
    from mace.calculators import MACECalculator

    configs = synthetic.random_configs(2, seed=9)
    synthetic.label_with_model(foundation.model, configs)
    calculator = MACECalculator(models=copy.deepcopy(foundation.model), device="cpu", default_dtype="float64")
    for atoms in configs:
        atoms.calc = calculator
        assert atoms.info["REF_energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
        assert np.abs(atoms.arrays["REF_forces"] - atoms.get_forces()).max() < 1e-10


# -- the math, without mace -----------------------------------------------------------------------
def test_slope_through_the_origin_its_standard_error_and_rmse():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    noise = 0.05 * torch.randn(200, 3, generator=generator, dtype=torch.float64)
    predicted = 0.9 * reference + noise
    element = torch.tensor([0, 1] * 100)
    statistics = ForceSlopeStatistics(2)
    for part in (slice(0, 70), slice(70, 200)):  # streamed in two batches
        statistics.update(element[part], predicted[part], reference[part])
    for index, result in enumerate(statistics.results()):
        r, p = reference[element == index].flatten(), predicted[element == index].flatten()
        slope = float((p @ r) / (r @ r))
        residual = p - slope * r
        standard_error = float(((residual @ residual) / (r.numel() - 1) / (r @ r)).sqrt())
        assert result.n_components == r.numel() == 300
        assert result.slope == pytest.approx(slope, rel=1e-12)
        assert result.standard_error == pytest.approx(standard_error, rel=1e-9)
        assert result.rmse == pytest.approx(float((p - r).pow(2).mean().sqrt()), rel=1e-12)
    assert force_slope(0, 0, 0, 0, 0).slope is None


def test_flag_rules_need_both_significance_and_size():
    off = 1.0 + FORCE_SLOPE_TOLERANCE
    assert slope_is_off(off + 1e-3, 1e-6) and not slope_is_off(off - 1e-3, 1e-6)  # significant, too small
    assert not slope_is_off(1.1, 0.05)  # large, but within 3 standard errors
    assert not slope_is_off(None, None)
    large = ENERGY_CORRECTION_THRESHOLD
    assert energy_is_off(large * 1.01, energy_z(large * 1.01, 1e-4))
    assert not energy_is_off(large * 0.99, energy_z(large * 0.99, 1e-6))  # significant, too small
    assert not energy_is_off(0.5, energy_z(0.5, 0.2))  # large, but z = 2.5
    assert energy_z(0.5, float("nan")) is None and not energy_is_off(0.5, None)  # undetermined: no flag
    assert energy_z(0.3, 0.0) == pytest.approx(3e8)  # an exact fit: a large, finite z
