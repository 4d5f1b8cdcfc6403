"""Estimating from part of a large set: a composition-stratified sample, and an early stop on the
standard errors. Noise-free planted shifts must still be recovered exactly from the part."""

import json
from collections import Counter

import pytest

from conftest import SHIFTS, expected_e0s, finetune_argv, mace_train, planted_configs, report, saved_e0s, write_xyz
from mace_e0_plugin.cli import main
from mace_e0_plugin.sampling import stratified_order


def test_every_prefix_is_stratified_and_starts_with_one_config_per_composition():
    compositions = ["A"] * 60 + ["B"] * 30 + ["C"] * 9 + ["D"]
    order = stratified_order(compositions, seed=3)
    assert sorted(order) == list(range(100))
    assert [compositions[i] for i in order[:4]] == ["A", "B", "C", "D"]
    prefix = Counter(compositions[i] for i in order[:50])
    assert abs(prefix["A"] - 30) <= 2 and abs(prefix["B"] - 15) <= 2 and abs(prefix["C"] - 4.5) <= 2
    assert stratified_order(compositions, seed=3) == order != stratified_order(compositions, seed=4)


def test_max_configs_in_the_hook_uses_a_sample_and_still_recovers_planted_shifts(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 60, seed=31))
    mace_train(finetune_argv(foundation, train, tmp_path / "run", "--E0s_max_configs", "12"))
    head = report(tmp_path / "run")["heads"]["Default"]
    assert head["n_configs"] == 12
    assert head["sampling"] == {"n_available": 54, "n_sampled": 12, "max_configs": 12, "se_tolerance": None,
                                "stopped_early": False}
    assert saved_e0s(tmp_path / "run" / "ft.model")[0].tolist() == pytest.approx(expected_e0s(foundation).tolist(), abs=1e-6)


def test_standard_error_tolerance_stops_early_in_the_cli(foundation, tmp_path, capsys):
    configs = planted_configs(foundation, 120, seed=32)
    for i, atoms in enumerate(configs):  # a little noise, so that standard errors are not zero
        atoms.info["REF_energy"] += 0.01 * ((i * 7919) % 13 - 6) / 6
    data = write_xyz(tmp_path / "data.xyz", configs)
    output = tmp_path / "report.json"
    assert main([ "estimate", str(foundation.path), str(data), "--energy-key", "REF_energy", "--batch-size", "2",
                  "--se-tolerance", "0.01", "--output", str(output)]) == 0
    head = json.loads(output.read_text())["heads"]["Default"]
    assert head["sampling"]["stopped_early"] is True
    assert head["n_configs"] < 120 and head["n_configs"] % 20 == 0  # checked every 10 batches of 2
    assert max(head["standard_errors"].values()) < 0.01
    assert "stopped early" in capsys.readouterr().out
    for z, shift in SHIFTS.items():
        assert head["corrections"][str(z)] == pytest.approx(shift, abs=0.05)
