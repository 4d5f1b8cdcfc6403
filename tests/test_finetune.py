"""End to end: mace_run_train --E0s=linear_system on a foundation built here, with reference
energies that are the foundation's own predictions plus planted per-element shifts. The
re-estimated E0s must be foundation + shift to 1e-6 eV, in every copy that mace saves."""

import json

import ase.io
import pytest
import torch

from conftest import (SHIFTS, add_noise, closed_form_e0s, expected_e0s, finetune_argv, mace_train, planted_configs, report,
                      saved_e0s, write_xyz)
from mace_e0_plugin import testing as synthetic

pytestmark = pytest.mark.slow  # every test is a mace_run_train fine-tune


def test_naive_finetune_writes_planted_shifts_into_every_saved_model(foundation, planted_train, tmp_path):
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, planted_train, work))

    expected = expected_e0s(foundation)
    # Same elements as the foundation: mace 0.3.16 copies the foundation's E0s over the new model's
    # here, so these only hold if the correction is written at the entry of training.
    assert torch.allclose(saved_e0s(work / "ft.model")[0], expected, atol=1e-6, rtol=0)
    compiled = torch.jit.load(str(work / "ft_compiled.model"))
    assert torch.allclose(compiled.atomic_energies_fn.atomic_energies[0].double(), expected, atol=1e-6, rtol=0)
    checkpoint = next((work / "checkpoints").glob("ft_run-1_epoch-*.pt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    assert torch.allclose(state["atomic_energies_fn.atomic_energies"][0].double(), expected, atol=1e-6, rtol=0)

    head = report(work)["heads"]["Default"]
    n_train = len(ase.io.read(planted_train, ":")) - 4  # valid_fraction 0.1 of 40
    assert head["n_configs"] == n_train
    assert head["rank"] == 3 and head["n_elements"] == 3 and head["determined_combinations"] == []
    for z, shift in SHIFTS.items():
        assert head["corrections"][str(z)] == pytest.approx(shift, abs=1e-6)
        assert head["E0s"][str(z)] == pytest.approx(foundation.e0s[z] + shift, abs=1e-6)
    assert head["rmse_per_atom_after_meV"] < 1e-3 < head["rmse_per_atom_before_meV"]
    figure = work / "results" / "ft_E0s_linear_system.png"  # mace's --plot is on by default
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_total_weighting_from_a_config_yaml(foundation, tmp_path):
    # Noisy configs of varied sizes: there the two weightings give different E0s.
    configs = add_noise(planted_configs(foundation, 40, seed=12), seed=13)
    train = write_xyz(tmp_path / "train.xyz", configs)
    valid = write_xyz(tmp_path / "valid.xyz", planted_configs(foundation, 4, seed=14))
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"H": -13.0, "6": -1030.0, "8": -2040.0}))
    config = tmp_path / "config.yaml"
    config.write_text(f"E0s_weighting: total\nE0s_prior: {prior}\n")
    argv = finetune_argv(foundation, train, tmp_path / "run", "--valid_file", str(valid)) + ["--config", str(config)]
    mace_train(argv)

    head = report(tmp_path / "run")["heads"]["Default"]
    assert head["weighting"] == "total"
    assert head["prior_E0s"] == {"1": -13.0, "6": -1030.0, "8": -2040.0}
    # Full rank: the prior does not move the answer, which is the unweighted closed form.
    total, per_atom = (closed_form_e0s(foundation.model, configs, w) for w in ("total", "per_atom"))
    assert head["E0s"] == pytest.approx({str(z): e for z, e in total.items()}, abs=1e-8)
    assert max(abs(total[z] - per_atom[z]) for z in total) > 1e-3


def test_only_the_linear_system_head_of_a_heads_config_changes(foundation, tmp_path):
    dft = write_xyz(tmp_path / "dft.xyz", planted_configs(foundation, 30, seed=3))
    other = write_xyz(tmp_path / "other.xyz", planted_configs(foundation, 30, seed=4))
    fixed = {1: -13.0, 6: -1030.0, 8: -2040.0}
    heads = {"dft": {"train_file": str(dft), "E0s": "linear_system"},
             "other": {"train_file": str(other), "E0s": str(fixed)}}
    argv = finetune_argv(foundation, dft, tmp_path / "run", "--heads", str(heads))
    mace_train(argv)

    model = torch.load(tmp_path / "run" / "ft.model", weights_only=False)
    rows = dict(zip(model.heads, model.atomic_energies_fn.atomic_energies.double()))
    assert torch.allclose(rows["dft"], expected_e0s(foundation), atol=1e-6, rtol=0)
    assert rows["other"].tolist() == [fixed[z] for z in (1, 6, 8)]
    assert list(report(tmp_path / "run")["heads"]) == ["dft"]


def test_multihead_replay_leaves_pt_head_alone_and_counts_each_config_once(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 12, seed=5))
    # Replay data at the foundation's level, ten times more: mace then repeats the fine-tuning
    # configs to balance them, and the estimate must still count each config once.
    replay = synthetic.random_configs(150, seed=6)
    synthetic.label(replay, synthetic.LEVEL_A)
    write_xyz(tmp_path / "replay.xyz", replay)
    argv = finetune_argv(foundation, train, tmp_path / "run", "--multiheads_finetuning", "True",
                         "--pt_train_file", str(tmp_path / "replay.xyz"), "--force_mh_ft_lr", "True",
                         "--real_pt_data_ratio_threshold", "0.5")
    mace_train(argv)

    model = torch.load(tmp_path / "run" / "ft.model", weights_only=False)
    assert model.heads == ["pt_head", "Default"]
    rows = model.atomic_energies_fn.atomic_energies.double()
    assert rows[0].tolist() == [foundation.e0s[z] for z in (1, 6, 8)]
    assert torch.allclose(rows[1], expected_e0s(foundation), atol=1e-6, rtol=0)
    head = report(tmp_path / "run")["heads"]
    assert list(head) == ["Default"]
    assert head["Default"]["n_configs"] == 11  # 12 minus the validation config, no replay, no repeats


def test_foundation_model_elements_keeps_the_prior_for_elements_absent_from_the_data(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 30, seed=8, elements=(1, 8)))
    mace_train(finetune_argv(foundation, train, tmp_path / "run", "--foundation_model_elements", "True"))

    e0s = saved_e0s(tmp_path / "run" / "ft.model")[0].tolist()
    assert e0s[0] == pytest.approx(foundation.e0s[1] + SHIFTS[1], abs=1e-6)
    assert e0s[1] == foundation.e0s[6]  # no carbon in the data: the prior, untouched
    assert e0s[2] == pytest.approx(foundation.e0s[8] + SHIFTS[8], abs=1e-6)
    head = report(tmp_path / "run")["heads"]["Default"]
    assert head["n_elements"] == 2 and head["rank"] == 2


def test_rank_deficient_data_take_the_training_files_isolated_atoms_as_prior(foundation, tmp_path):
    # Every config is ethanol-like C2H6O: the data fix one combination of E0s (rank 1 of 3).
    configs = planted_configs(foundation, 25, seed=9, stoichiometry={1: 6, 6: 2, 8: 1})
    isolated = synthetic.isolated_atoms(synthetic.LEVEL_B)
    train = write_xyz(tmp_path / "train.xyz", isolated + configs)
    mace_train(finetune_argv(foundation, train, tmp_path / "run"))

    head = report(tmp_path / "run")["heads"]["Default"]
    assert head["rank"] == 1 and head["n_elements"] == 3
    assert head["determined_combinations"] == ["6 H + 2 C + O"]
    prior = torch.tensor([synthetic.LEVEL_B.e0s[z] for z in (1, 6, 8)], dtype=torch.float64)
    assert head["prior_E0s"] == {str(z): synthetic.LEVEL_B.e0s[z] for z in (1, 6, 8)}
    e0s = saved_e0s(tmp_path / "run" / "ft.model")[0]
    composition = torch.tensor([6.0, 2.0, 1.0], dtype=torch.float64)
    # The determined combination fits the data...
    truth = expected_e0s(foundation)
    assert float(composition @ e0s) == pytest.approx(float(composition @ truth), abs=1e-6)
    # ...and the rest is the prior: the change from the prior lies along the composition only.
    change = e0s - prior
    along = (change @ composition) / (composition @ composition) * composition
    assert torch.allclose(change, along, atol=1e-8, rtol=0)
    assert all(head["standard_errors"][str(z)] is None for z in (1, 6, 8))


def test_restart_from_a_checkpoint_keeps_the_estimated_e0s(foundation, planted_train, tmp_path):
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, planted_train, work))
    first = saved_e0s(work / "ft.model")
    (work / "results" / "ft_E0s_linear_system.json").unlink()

    # Shift the data again: a re-estimate would move the E0s by this.
    configs = ase.io.read(planted_train, ":")
    for atoms in configs:
        atoms.info["REF_energy"] += 0.5 * len(atoms)
    write_xyz(planted_train, configs)
    mace_train(finetune_argv(foundation, planted_train, work, "--restart_latest", "--max_num_epochs", "2"))

    assert not (work / "results" / "ft_E0s_linear_system.json").exists()
    assert torch.equal(saved_e0s(work / "ft.model"), first)


def test_the_hooks_default_pass_is_float32_on_a_float64_fine_tune(foundation, planted_train, tmp_path):
    argv = finetune_argv(foundation, planted_train, tmp_path / "run")
    at = argv.index("--E0s_dtype")
    del argv[at:at + 2]  # the default, not the tests' float64
    mace_train(argv)
    head = report(tmp_path / "run")["heads"]["Default"]
    assert head["pass_dtype"] == "float32"
    assert saved_e0s(tmp_path / "run" / "ft.model")[0].tolist() == pytest.approx(expected_e0s(foundation).tolist(),
                                                                                abs=1e-4)
