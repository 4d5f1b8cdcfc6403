"""reestimate_e0s, the Python door: the numbers of mace-e0 estimate from files, Atoms and calculators;
priors from Python objects; the result's table, report entry, figure and apply; inputs left alone."""

import json

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import SHIFTS, planted_configs, shared_path, write_xyz
from mace_e0_plugin import E0InputError, reestimate_e0s
from mace_e0_plugin.errors import E0ModelError
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.doors import main
from mace_e0_plugin.glue import read_provenance

NOISE_EV = 0.05  # per config: makes the standard errors non-zero, so that comparing them means something
WATER = {1: 2, 8: 1}  # every config water: rank 1 of 2, the null space is along H - 2 O
REPORT_KEYS = {"E0s", "prior_E0s", "starting_E0s", "corrections", "standard_errors", "rank", "n_elements",
               "condition_number", "n_configs", "n_skipped", "weighting", "determined_combinations",
               "determined_coefficients", "present_elements", "rmse_per_atom_before_meV",
               "rmse_per_atom_after_meV", "prior", "pass_dtype", "suspicious_configs", "n_excluded_suspicious"}


def noisy_configs(foundation, n_configs=30, seed=11, **kwargs):
    configs = planted_configs(foundation, n_configs, seed=seed, **kwargs)
    noise = np.random.default_rng(seed).normal(0.0, NOISE_EV, len(configs))
    for atoms, extra in zip(configs, noise):
        atoms.info["REF_energy"] += float(extra)
    return configs


def with_calculator_energies(configs):
    """The notebook's form: each energy in a SinglePointCalculator, none in info."""
    frames = []
    for atoms in configs:
        frame = atoms.copy()
        energy = frame.info.pop("REF_energy")
        frame.calc = SinglePointCalculator(frame, energy=energy)
        frames.append(frame)
    return frames


def cli_report(tmp_path, capsys, *argv):
    """mace-e0 estimate in this process; its report's head entry. The CLI leaves float64 as the
    default dtype (a process of its own), so the caller's is put back."""
    dtype = torch.get_default_dtype()
    output = tmp_path / "cli.json"
    try:
        assert main(["estimate", *map(str, argv), "--output", str(output), "--force"]) == 0, capsys.readouterr().err
    finally:
        torch.set_default_dtype(dtype)
    capsys.readouterr()
    return json.loads(output.read_text())["heads"]["Default"]


def by_z(entry):
    return {int(z): (float("nan") if v is None else v) for z, v in entry.items()}


def assert_same_numbers(result, head):
    for name, expected in (("e0s", head["E0s"]), ("corrections", head["corrections"]),
                           ("standard_errors", head["standard_errors"])):
        got, want = getattr(result, name), by_z(expected)
        assert list(got) == list(want), name
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=0, atol=1e-10, err_msg=name)
    assert result.rank == head["rank"] and result.determined_combinations == head["determined_combinations"]


SAME_BATCH = 7


@pytest.mark.parametrize("stoichiometry", [None, WATER], ids=["full-rank", "rank-deficient"])
def test_same_numbers_as_mace_e0_estimate_from_a_file_and_from_atoms(foundation, tmp_path, capsys, stoichiometry):
    configs = noisy_configs(foundation, stoichiometry=stoichiometry)
    train = write_xyz(tmp_path / "train.xyz", configs)
    # The same batches as the CLI's: a float32 pass's energies depend on the batch a config sits in
    # (by ~1e-9 eV on a rank-deficient fit here), which is not what this test compares.
    head = cli_report(tmp_path, capsys, foundation.path, train, "--energy-key", "REF_energy", "--batch-size", SAME_BATCH)
    errors = [head["standard_errors"][str(z)] for z in head["present_elements"]]
    if stoichiometry is None:
        assert head["rank"] == 3 and min(errors) > 1e-4
    else:  # no element alone is determined: no standard error anywhere, the comparison is of nan
        assert head["rank"] == 1 and errors == [None, None]

    assert_same_numbers(reestimate_e0s(foundation.path, [train], "REF_energy", batch_size=SAME_BATCH, progress=False),
                        head)

    frames = with_calculator_energies(ase.io.read(train, ":"))  # the file's configs, digit for digit
    before = [(dict(a.info), a.positions.copy(), a.get_potential_energy()) for a in frames]
    assert_same_numbers(reestimate_e0s(foundation.model, frames, batch_size=SAME_BATCH, progress=False), head)
    for atoms, (info, positions, energy) in zip(frames, before):  # the caller's Atoms are left alone
        assert atoms.info == info and np.array_equal(atoms.positions, positions)
        assert atoms.get_potential_energy() == energy


def test_the_callers_default_dtype_survives_the_float64_graphs(foundation, planted_train):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        reestimate_e0s(foundation.model, [planted_train], "REF_energy", progress=False)
        assert torch.get_default_dtype() == torch.float32
        with pytest.raises(E0InputError):  # and when the estimate fails half-way
            reestimate_e0s(foundation.model, [planted_train], "DFT", progress=False)
        assert torch.get_default_dtype() == torch.float32
    finally:
        torch.set_default_dtype(previous)


def test_a_mace_calculator_gives_the_numbers_of_its_module_and_emt_a_clear_error(foundation):
    from mace.calculators import MACECalculator

    configs = noisy_configs(foundation, n_configs=16, seed=3)
    from_module = reestimate_e0s(foundation.model, configs, "REF_energy", progress=False)
    calculator = MACECalculator(model_paths=str(foundation.path), device="cpu", default_dtype="float64")
    from_calculator = reestimate_e0s(calculator, configs, "REF_energy", progress=False)
    from_path = reestimate_e0s(foundation.path, configs, "REF_energy", progress=False)
    assert_same_numbers(from_calculator, from_module.to_dict())
    assert_same_numbers(from_path, from_module.to_dict())
    assert min(from_module.standard_errors.values()) > 1e-4  # noisy: a comparison of real numbers

    with pytest.raises(E0InputError) as error:
        reestimate_e0s(EMT(), configs, "REF_energy")
    message = error.value.message
    assert message.startswith("model: EMT is not a MACE model") and "MACECalculator" in message
    assert "\n" not in message


@pytest.mark.parametrize("argument, value, says", [
    ("configs", [], "configs: empty"),
    ("batch_size", 0, "batch_size=0: must be a positive integer"),
    ("weighting", "rms", "weighting='rms': use one of per_atom, total"),
    ("prior", {"Xx": -1.0}, "prior: 'Xx' is not an element"),
    ("prior", {"H": float("nan")}, "prior: the E0 of 'H' is nan; every value must be a finite number"),
    ("prior", {}, "prior: empty"),
    ("dtype", "float16", "dtype='float16': use float32 or float64"),
    ("head", "mp2", "head='mp2': the model has no such head"),
    ("energy_key", "DFT_energy", "DATA"),
])
def test_bad_arguments_get_one_line_naming_the_argument(foundation, planted_train, argument, value, says):
    arguments = {"configs": [planted_train], "energy_key": "REF_energy", argument: value}
    with pytest.raises(E0InputError) as error:
        reestimate_e0s(foundation.model, progress=False, **arguments)
    assert error.value.message.startswith(says) and "\n" not in error.value.message
    assert "--" not in error.value.message  # options as Python spells them, not as a command line does


def test_a_notebook_loop_gets_past_a_bad_dataset_with_except_value_error(foundation, planted_train):
    results, failures = {}, {}
    for name, key in (("wrong key", "DFT_energy"), ("good", "REF_energy")):
        try:
            results[name] = reestimate_e0s(foundation.model, [planted_train], energy_key=key, progress=False)
        except ValueError as error:
            failures[name] = str(error)
    assert list(results) == ["good"] and list(failures) == ["wrong key"]
    assert "energy_key='DFT_energy'" in failures["wrong key"]
    assert results["good"].solution.n_configs == 40


def test_along_the_null_space_the_e0s_are_the_prior_given_as_a_dict_or_isolated_atoms(foundation):
    water = noisy_configs(foundation, n_configs=20, seed=5, stoichiometry=WATER)
    level_b = synthetic.LEVEL_B.e0s
    by_symbol = reestimate_e0s(foundation.model, water, "REF_energy", prior={"H": level_b[1], "O": level_b[8],
                                                                             "C": level_b[6]}, progress=False)
    by_number = reestimate_e0s(foundation.model, water, "REF_energy", prior=dict(level_b), progress=False)
    isolated = reestimate_e0s(foundation.model, water, "REF_energy", prior=synthetic.isolated_atoms(synthetic.LEVEL_B),
                              progress=False)
    assert by_symbol.e0s == by_number.e0s
    assert isolated.e0s == pytest.approx(by_number.e0s, abs=1e-12)
    assert by_number.to_dict()["prior"]["kind"] == "e0s_file" and isolated.to_dict()["prior"]["kind"] == "isolated_atoms"

    for result in (by_number, isolated):
        assert result.rank == 1 and result.determined_combinations == ["2 H + O"]
        change = np.array([result.e0s[z] - level_b[z] for z in (1, 8)])
        null_space = np.array([1.0, -2.0]) / np.sqrt(5.0)  # orthogonal to 2 H + O
        assert abs(change @ null_space) < 1e-10  # the prior, exactly, where the data say nothing
        assert result.e0s[6] == level_b[6]  # no carbon in the data: its prior
        assert np.isnan(result.standard_errors[1]) and np.isnan(result.standard_errors[8])
        planted = 2 * (foundation.e0s[1] + SHIFTS[1]) + foundation.e0s[8] + SHIFTS[8]
        (value,) = result.determined_values.values()
        assert value == pytest.approx(2 * result.e0s[1] + result.e0s[8], abs=1e-9)
        assert value == pytest.approx(planted, abs=NOISE_EV)  # what the data fix, to within the noise


def test_apply_writes_the_e0s_into_a_copy_and_leaves_the_model_alone(foundation):
    result = reestimate_e0s(foundation.path, noisy_configs(foundation, n_configs=12, seed=2), "REF_energy",
                            progress=False)
    original = foundation.model.atomic_energies_fn.atomic_energies.clone()
    new = result.apply(foundation.model)
    assert new is not foundation.model
    assert torch.equal(foundation.model.atomic_energies_fn.atomic_energies, original)
    assert new.atomic_energies_fn.atomic_energies[0].tolist() == list(result.e0s.values())
    assert read_provenance(new)["Default"]["rank"] == result.rank
    assert read_provenance(foundation.model) == {}
    changed = [k for k, v in foundation.model.state_dict().items() if not torch.equal(v, new.state_dict()[k])]
    assert changed == ["atomic_energies_fn.atomic_energies"]
    # Without a model: the one the estimate ran on (here a path, read afresh).
    assert result.apply().atomic_energies_fn.atomic_energies[0].tolist() == list(result.e0s.values())


def test_table_report_entry_and_figure(foundation, planted_train, tmp_path):
    import matplotlib.figure

    result = reestimate_e0s(foundation.model, [planted_train], "REF_energy", progress=False)
    assert "E0 re-estimation for head 'Default': 40 configs" in result.table() and "rank 3 / 3" in result.table()
    entry = result.to_dict()
    assert set(entry) == REPORT_KEYS and entry["E0s"] == {str(z): e for z, e in result.e0s.items()}
    json.dumps(entry)  # what the report holds: plain JSON

    backend = dict.__getitem__(matplotlib.rcParams, "backend")
    figure = result.plot()
    assert isinstance(figure, matplotlib.figure.Figure) and len(figure.axes) == 4
    path = tmp_path / "estimate.png"
    assert result.plot(path) is not None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    assert dict.__getitem__(matplotlib.rcParams, "backend") == backend  # no backend forced on the caller

    axis = matplotlib.figure.Figure().subplots()
    assert result.plot(ax=axis) is axis.figure
    heights = [bar.get_height() for bar in axis.patches]
    assert heights == pytest.approx(list(result.corrections.values()), abs=1e-12)
    assert heights == pytest.approx([SHIFTS[z] for z in (1, 6, 8)], abs=1e-6)


@pytest.mark.shared
def test_caco3_water_keeps_the_foundation_e0s_along_the_null_space():
    """Every frame is CaCO3 + 98 H2O: rank 1 of 4. The minimum-norm answer (the seed notebook's)
    and the plugin's agree on the one combination the data fix, and differ everywhere else."""
    model = shared_path("models", "mace_spice_15el.model")
    data = shared_path("data", "caco3-water", "training_set_30_revPBE0_D3.xyz")
    result = reestimate_e0s(model, [data], "rPBE0D3_energy", device="cpu", progress=False)
    elements = [1, 6, 8, 20]
    assert result.rank == 1 and result.determined_combinations == ["196 H + C + 101 O + Ca"]

    prior = np.array([result.prior_e0s[z] for z in elements])
    start = np.array([result.to_dict()["starting_E0s"][str(z)] for z in elements])
    assert result.to_dict()["prior"]["kind"] == "foundation" and np.array_equal(prior, start)
    new = np.array([result.e0s[z] for z in elements])
    composition = np.array([196.0, 1.0, 101.0, 1.0])
    null_space = np.linalg.svd(composition[None, :])[2][1:]  # 3 directions orthogonal to it
    assert np.abs(null_space @ (new - prior)).max() < 1e-8  # the prior, there

    counts, residuals = result.estimate.heads["Default"].sample.arrays()  # E_ref - E_pred, per config
    counts = counts[:, [list(result.e0s).index(z) for z in elements]]  # the model has 15 elements
    assert len(residuals) == 30 and (counts == composition).all()
    minimum_norm = start + np.linalg.lstsq(counts, residuals, rcond=None)[0]
    (value,) = result.determined_values.values()
    assert value == pytest.approx(composition @ new, abs=1e-8)
    assert value == pytest.approx(composition @ minimum_norm, abs=1e-6)  # same along what the data fix
    assert abs(minimum_norm[0] - prior[0]) > 50  # and hundreds of eV apart elsewhere


INLINE_PROBE = """
import os
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # what a Jupyter kernel sets
from IPython.testing.globalipapp import start_ipython
shell = start_ipython()
from matplotlib.figure import Figure
from mace_e0_plugin.doors._result import _show_inline_in_notebooks
png = shell.display_formatter.formatters["image/png"]
before = Figure in png.type_printers
_show_inline_in_notebooks()
print(before, Figure in png.type_printers)
"""


@pytest.mark.slow  # a fresh interpreter with IPython that imports torch and mace (~4 s of CPU)
def test_in_a_jupyter_like_shell_the_figure_gets_a_png_display(tmp_path):
    """A bare Figure returned by .plot() shows inline only once IPython has a PNG printer for
    Figure; matplotlib-inline registers it when its backend loads, which .plot() makes happen."""
    pytest.importorskip("IPython")
    pytest.importorskip("matplotlib_inline")
    from conftest import PYTHON, run_command

    result = run_command([PYTHON, "-c", INLINE_PROBE], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["False", "True"]  # after mace's import-time notice


def test_the_default_pass_is_float32_and_within_1e_4_ev_of_float64(foundation):
    configs = noisy_configs(foundation, n_configs=16, seed=9)
    fast = reestimate_e0s(foundation.model, configs, "REF_energy", progress=False)
    exact = reestimate_e0s(foundation.model, configs, "REF_energy", dtype="float64", progress=False)
    assert (fast.to_dict()["pass_dtype"], exact.to_dict()["pass_dtype"]) == ("float32", "float64")
    differences = [abs(fast.e0s[z] - exact.e0s[z]) for z in exact.e0s]
    assert 0 < max(differences) < 1e-4  # it really ran in float32, and it does not matter
    assert next(foundation.model.parameters()).dtype == torch.float64  # on a copy: the model is as it was


def test_a_model_with_another_energy_term_is_refused_with_one_line_naming_it(foundation, planted_train):
    import copy

    model = copy.deepcopy(foundation.model)

    def another_term(_module, _inputs, output):  # e.g. a dispersion correction added to the energy only
        output["energy"] = output["energy"] + 0.5
        return output

    model.register_forward_hook(another_term)
    for dtype in ("float64", "float32"):
        with pytest.raises(E0ModelError) as error:
            reestimate_e0s(model, [planted_train], "REF_energy", dtype=dtype, progress=False)
        message = str(error.value)
        assert message.startswith("model: ScaleShiftMACE's energy is not its E0 sum plus its interaction energy")
        assert "(off by 0.5" in message and "\n" not in message  # float32 sums round at ~1e-3 eV here


def test_e0s_of_opposite_sign_that_cancel_pass_the_split_check_in_float32():
    # A rank-deficient fit with the foundation as prior can give E0(H) = +714 eV, E0(O) = -1672 eV:
    # the E0 terms of a config cancel, and a float32 pass rounds at the size of the terms, not of E.
    model = synthetic.build_foundation({1: 5000.3, 6: -1029.5, 8: -10000.6}, seed=3)
    configs = synthetic.label(synthetic.random_configs(8, seed=4, stoichiometry={1: 20, 8: 10}), synthetic.LEVEL_B)
    fast = reestimate_e0s(model, configs, "REF_energy", progress=False)  # float32: refused before the fix
    exact = reestimate_e0s(model, configs, "REF_energy", dtype="float64", progress=False)
    combination = [20 * fast.e0s[1] + 10 * fast.e0s[8], 20 * exact.e0s[1] + 10 * exact.e0s[8]]
    assert combination[0] == pytest.approx(combination[1], abs=1e-3)
