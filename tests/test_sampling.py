"""Estimating from part of a large set: a composition-stratified sample of at most --max-configs, in
mace-e0 and the Python API (a fine-tune reads all its data)."""

import json
from collections import Counter

import pytest

from conftest import add_noise, closed_form_e0s, finetune_argv, mace_train, planted_configs, write_xyz
from mace_e0_plugin import reestimate_e0s
from mace_e0_plugin.doors import main
from mace_e0_plugin.glue import SAMPLING_SEED
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


def test_max_configs_fits_exactly_the_stratified_sample(foundation, tmp_path):
    # Three stoichiometries, 30/20/10 configs: a sample of 12 takes about 6/4/2 of them, in the order
    # stratified_order gives (always the same sample: SAMPLING_SEED), and the fit is of those alone.
    kinds = [(((1, 4), (6, 1)), 30), (((1, 2), (8, 1)), 20), (((6, 1), (8, 2)), 10)]
    configs = strata(foundation, kinds, seed=31)
    data = write_xyz(tmp_path / "data.xyz", configs)
    output = tmp_path / "report.json"
    assert main(["estimate", str(foundation.path), str(data), "--energy-key", "REF_energy", "--max-configs", "12",
                 "--dtype", "float64", "--output", str(output)]) == 0
    head = json.loads(output.read_text())["heads"]["Default"]
    assert head["sampling"] == {"n_available": 60, "n_sampled": 12, "max_configs": 12}

    compositions = [tuple(int((a.numbers == z).sum()) for z in (1, 6, 8)) for a in configs]
    sample = stratified_order(compositions, seed=SAMPLING_SEED)[:12]
    assert sorted(Counter(compositions[i] for i in sample).values()) == [2, 4, 6]  # stratified
    expected = closed_form_e0s(foundation.model, [configs[i] for i in sample], "per_atom")
    assert head["n_configs"] == 12
    assert head["E0s"] == pytest.approx({str(z): e for z, e in expected.items()}, abs=1e-8)
    everything = closed_form_e0s(foundation.model, configs, "per_atom")
    assert max(abs(everything[z] - expected[z]) for z in expected) > 1e-4  # not the whole set's fit
    again = reestimate_e0s(foundation.model, configs, "REF_energy", max_configs=12, dtype="float64", progress=False)
    assert again.e0s == pytest.approx(expected, abs=1e-8)  # the Python door: the same sample


def test_mace_run_train_has_no_sampling_options(foundation, planted_train, tmp_path):
    # The estimate costs 0.043 of a training epoch at MACE-MP-0 scale (benchmarks/mp_scale.py): inside
    # a fine-tune, a sample would save at most that.
    with pytest.raises(SystemExit):
        mace_train(finetune_argv(foundation, planted_train, tmp_path / "run", "--E0s_max_configs", "12"))
    assert not (tmp_path / "run").exists()
