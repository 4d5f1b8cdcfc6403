"""Broken labels found before training: configs whose residual after the fit lies far outside the
fit's own robust spread are listed, by their place in the input, in the estimate's report, in
DIAG.json and in the training log; the fit keeps them unless told to leave them out."""

import json

import ase.io
import numpy as np
import pytest
import torch

from conftest import (add_noise, closed_form_e0s, finetune_argv, mace_train, planted_configs, report, shared_path,
                      write_xyz)
from mace_e0_plugin import reestimate_e0s
from mace_e0_plugin.doors import EXIT_FLAGGED, main
from mace_e0_plugin.math import SUSPICIOUS_ROBUST_Z, robust_z, suspicious_mask

CORRUPTIONS = {17: 15.0, 102: -25.0, 230: 40.0}  # eV: a failed SCF, a unit slip


def test_the_robust_z_ignores_the_outliers_it_finds():
    rng = np.random.default_rng(0)
    n_atoms = torch.tensor(rng.integers(5, 40, size=500), dtype=torch.float64)
    residuals = 0.003 * n_atoms * torch.tensor(rng.standard_normal(500))  # 3 meV/atom of honest error
    clean = suspicious_mask(residuals, n_atoms)
    assert not clean.any()
    broken = residuals.clone()
    broken[[3, 250]] += torch.tensor([2.0, -1.5])
    assert suspicious_mask(broken, n_atoms).nonzero().flatten().tolist() == [3, 250]
    # Median and MAD: the spread the outliers are judged against is the clean one.
    assert float(robust_z(broken / n_atoms, 1e-4).abs().sort().values[-3]) < SUSPICIOUS_ROBUST_Z


@pytest.mark.slow
def test_exact_data_have_no_suspicious_config_and_a_planted_fault_is_named_in_the_training_log(
        foundation, tmp_path, caplog):
    configs = planted_configs(foundation, 40, seed=61)  # exact: residuals are float rounding only
    configs[7].info["REF_energy"] += 12.0
    configs[7].info["config_type"] = "failed_scf"
    train = write_xyz(tmp_path / "train.xyz", configs)
    with caplog.at_level("WARNING", logger="mace_e0_plugin"):  # mace splits off 10% at random for validation
        mace_train(finetune_argv(foundation, train, tmp_path / "run"))
    head = report(tmp_path / "run")["heads"]["Default"]
    (entry,) = head["suspicious_configs"]
    # Named by its place in the file, not in mace's shuffled training set, with its config_type.
    assert (entry["index"], entry["file"], entry["config_type"]) == (7, str(train), "failed_scf")
    assert entry["residual_eV"] == pytest.approx(12.0 * 35 / 36, abs=1.0)
    named = [r.getMessage() for r in caplog.records if "looks like a broken label" in r.getMessage()]
    assert len(named) == 1 and f"config 7 of {train}" in named[0]


def test_excluding_them_is_the_fit_without_them(foundation, tmp_path):
    configs = add_noise(planted_configs(foundation, 60, seed=63), seed=64)
    configs[11].info["REF_energy"] -= 20.0
    kept = reestimate_e0s(foundation.model, configs, "REF_energy", dtype="float64", progress=False)
    left = reestimate_e0s(foundation.model, configs, "REF_energy", dtype="float64", exclude_suspicious=True,
                          progress=False)
    assert [e["index"] for e in kept.to_dict()["suspicious_configs"]] == [11]
    assert kept.to_dict()["n_excluded_suspicious"] == 0 and left.to_dict()["n_excluded_suspicious"] == 1
    without = closed_form_e0s(foundation.model, configs[:11] + configs[12:], "per_atom")
    everything = closed_form_e0s(foundation.model, configs, "per_atom")
    assert left.e0s == pytest.approx(without, abs=1e-8)  # the least-squares optimum without it
    assert kept.e0s == pytest.approx(everything, abs=1e-8)  # by default: the optimum of MACE's loss on all


def corrupted_held_out(folder):
    """300 held-out PBE molecules (ethanol-methanol test set), three with a broken label; (file, frames)."""
    frames = ase.io.read(shared_path("data", "ethanol-methanol-pbe", "test_eth_meth.xyz"), ":")
    frames = frames[::max(1, len(frames) // 300)][:300]
    for index, shift in CORRUPTIONS.items():
        frames[index].info["REF_energy"] += shift
    return write_xyz(folder / "held_out.xyz", frames), frames


@pytest.mark.shared
def test_three_corrupted_labels_among_300_real_molecules_and_only_they_are_listed(tmp_path, capsys):
    model = shared_path("models", "mace_spice_15el.model")
    data, _ = corrupted_held_out(tmp_path)
    diag = tmp_path / "DIAG.json"
    code = main(["diagnose", str(model), str(data), "--energy-key", "REF_energy", "--forces-key", "REF_forces",
                 "--output", str(diag)])
    out = capsys.readouterr().out
    assert code == EXIT_FLAGGED
    listed = json.loads(diag.read_text())["heads"]["Default"]["suspicious_configs"]
    assert sorted(entry["index"] for entry in listed) == sorted(CORRUPTIONS)
    assert all(entry["file"] == str(data) for entry in listed)
    for entry in listed:  # the residual is the planted shift, less what the fit absorbed of it
        assert entry["residual_eV"] == pytest.approx(CORRUPTIONS[entry["index"]], rel=0.1)
    assert "SUSPICIOUS LABELS: 3 config(s)" in out and f"config 230 of {data}" in out


@pytest.mark.shared
@pytest.mark.slow
def test_the_same_three_are_named_in_the_training_log_before_the_first_epoch(tmp_path, caplog):
    model = shared_path("models", "mace_spice_15el.model")
    train, frames = corrupted_held_out(tmp_path)
    valid = write_xyz(tmp_path / "valid.xyz", frames[:4])
    argv = ["--name", "ft", "--work_dir", str(tmp_path / "run"), "--seed", "1", "--foundation_model", str(model),
            "--train_file", str(train), "--valid_file", str(valid), "--energy_key", "REF_energy",
            "--forces_key", "REF_forces", "--max_num_epochs", "1", "--batch_size", "32", "--valid_batch_size", "64",
            "--device", "cpu", "--default_dtype", "float64", "--E0s", "linear_system", "--E0s_refit", "none",
            "--E0s_prior", "foundation", "--multiheads_finetuning", "False", "--plot", "False"]
    with caplog.at_level("WARNING", logger="mace_e0_plugin"):
        mace_train(argv)
    named = [r.getMessage() for r in caplog.records if "looks like a broken label" in r.getMessage()]
    assert sorted(int(m.split(": config ")[1].split()[0]) for m in named) == sorted(CORRUPTIONS)
    assert all(str(train) in message for message in named)
    listed = report(tmp_path / "run")["heads"]["Default"]["suspicious_configs"]
    assert sorted(entry["index"] for entry in listed) == sorted(CORRUPTIONS)
