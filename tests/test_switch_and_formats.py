"""The plugin turned off, bad input from the command line, and each training data format mace reads
(extxyz, h5 from mace_prepare_data, LMDB). Every way mace is launched: test_launch_routes.py."""

import os

import pytest
import torch

from conftest import (expected_e0s, finetune_argv, mace_train, planted_configs, report, run_command,
                      saved_e0s, write_xyz)

pytestmark = pytest.mark.slow


def test_disabled_plugin_leaves_mace_as_it_was(foundation, planted_train, tmp_path):
    result = run_command(["mace_run_train"] + finetune_argv(foundation, planted_train, tmp_path / "run", plugin=False),
                         cwd=tmp_path, env={"MACE_E0_PLUGIN": "0"})
    assert result.returncode != 0
    assert "E0s specified invalidly" in result.stderr  # mace's own failure on the keyword
    assert not (tmp_path / "run" / "results" / "ft_E0s_linear_system.json").exists()


def test_bad_input_from_the_command_line_is_one_line_without_traceback(foundation, planted_train, tmp_path):
    argv = finetune_argv(foundation, planted_train, tmp_path / "run", "--E0s_prior", str(tmp_path / "none.json"))
    result = run_command(["mace_run_train"] + argv, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("mace-e0-plugin: error: --E0s_prior=")
    assert "Traceback" not in result.stderr


def test_h5_training_data(foundation, tmp_path):
    write_xyz(tmp_path / "data.xyz", planted_configs(foundation, 40, seed=21))
    prepared = run_command(
        ["mace_prepare_data", "--train_file", "data.xyz", "--valid_fraction", "0.2", "--r_max", "4.5",
         "--h5_prefix", "h5/", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
         "--atomic_numbers", "[1, 6, 8]", "--seed", "1", "--num_process", "1"], cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    argv = finetune_argv(foundation, tmp_path / "h5" / "train" / "train_0.h5", tmp_path / "run",
                         "--valid_file", str(tmp_path / "h5" / "val" / "val_0.h5"),
                         "--atomic_numbers", "[1, 6, 8]")
    mace_train(argv)
    assert torch.allclose(saved_e0s(tmp_path / "run" / "ft.model")[0], expected_e0s(foundation), atol=1e-6, rtol=0)
    assert report(tmp_path / "run")["heads"]["Default"]["n_configs"] == 32


def write_lmdb(folder, configs):
    from ase.calculators.singlepoint import SinglePointCalculator
    from mace.tools.fairchem_dataset.lmdb_dataset_tools import LMDBDatabase

    os.makedirs(folder, exist_ok=True)
    database = LMDBDatabase(str(folder / "data.aselmdb"))
    for atoms in configs:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.info.pop("REF_energy"),
                                           forces=atoms.arrays.pop("REF_forces"))
        database.write(atoms)
    database.close()
    return folder


def test_lmdb_training_data(foundation, tmp_path):
    train = write_lmdb(tmp_path / "train_lmdb", planted_configs(foundation, 30, seed=22))
    valid = write_lmdb(tmp_path / "valid_lmdb", planted_configs(foundation, 5, seed=23))
    argv = finetune_argv(foundation, train, tmp_path / "run", "--valid_file", str(valid),
                         "--atomic_numbers", "[1, 6, 8]")
    mace_train(argv)
    assert torch.allclose(saved_e0s(tmp_path / "run" / "ft.model")[0], expected_e0s(foundation), atol=1e-6, rtol=0)
    assert report(tmp_path / "run")["heads"]["Default"]["n_configs"] == 30
