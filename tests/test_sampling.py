"""Estimating from part of a large set: a composition-stratified sample, and an early stop on the
standard errors."""

import json
from collections import Counter

import pytest

from conftest import SHIFTS, add_noise, closed_form_e0s, finetune_argv, mace_train, planted_configs, report, write_xyz
from mace_e0_plugin.doors import main
from mace_e0_plugin.glue import CHECK_EVERY
from mace_e0_plugin.math import stratified_order


def test_every_prefix_is_stratified_and_starts_with_one_config_per_composition():
    compositions = ["A"] * 60 + ["B"] * 30 + ["C"] * 9 + ["D"]
    order = stratified_order(compositions, seed=3)
    assert sorted(order) == list(range(100))
    assert [compositions[i] for i in order[:4]] == ["A", "B", "C", "D"]
    prefix = Counter(compositions[i] for i in order[:50])
    assert abs(prefix["A"] - 30) <= 2 and abs(prefix["B"] - 15) <= 2 and abs(prefix["C"] - 4.5) <= 2
    assert stratified_order(compositions, seed=3) == order != stratified_order(compositions, seed=4)


def strata(foundation, counts_and_sizes, seed):
    """Configs of a few fixed stoichiometries, ``{stoichiometry: how many}``, noisy, in file order."""
    configs = []
    for offset, (stoichiometry, size) in enumerate(counts_and_sizes):
        configs += planted_configs(foundation, size, seed=seed + offset, stoichiometry=dict(stoichiometry))
    return add_noise(configs, seed=seed + 100)


def test_max_configs_in_the_hook_fits_exactly_the_stratified_sample(foundation, tmp_path):
    # Three stoichiometries, 30/20/10 configs: a sample of 12 takes about 6/4/2 of them, in the order
    # stratified_order gives (the hook's seed is the run's --seed), and the fit is of those alone.
    kinds = [(((1, 4), (6, 1)), 30), (((1, 2), (8, 1)), 20), (((6, 1), (8, 2)), 10)]
    configs = strata(foundation, kinds, seed=31)
    train = write_xyz(tmp_path / "train.xyz", configs)
    valid = write_xyz(tmp_path / "valid.xyz", planted_configs(foundation, 4, seed=39))
    argv = finetune_argv(foundation, train, tmp_path / "run", "--E0s_max_configs", "12", "--valid_file", str(valid))
    args = mace_train(argv)
    head = report(tmp_path / "run")["heads"]["Default"]
    assert head["sampling"] == {"n_available": 60, "n_sampled": 12, "max_configs": 12, "se_tolerance": None,
                                "stopped_early": False}

    compositions = [tuple(int((a.numbers == z).sum()) for z in (1, 6, 8)) for a in configs]
    sample = stratified_order(compositions, seed=args.seed)[:12]
    assert sorted(Counter(compositions[i] for i in sample).values()) == [2, 4, 6]  # stratified
    expected = closed_form_e0s(foundation.model, [configs[i] for i in sample], "per_atom")
    assert head["n_configs"] == 12
    assert head["E0s"] == pytest.approx({str(z): e for z, e in expected.items()}, abs=1e-8)
    everything = closed_form_e0s(foundation.model, configs, "per_atom")
    assert max(abs(everything[z] - expected[z]) for z in expected) > 1e-4  # not the whole set's fit


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
    assert head["n_configs"] < 120 and head["n_configs"] % (CHECK_EVERY * 2) == 0  # checked every 10 batches of 2
    assert max(head["standard_errors"].values()) < 0.01
    assert "stopped early" in capsys.readouterr().out
    for z, shift in SHIFTS.items():
        assert head["corrections"][str(z)] == pytest.approx(shift, abs=0.05)
