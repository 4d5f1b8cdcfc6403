"""Bad input never starts training with wrong E0s: one clear error that names the option or file
and the fix, raised before the first training step, and nothing the user had is overwritten."""

import json

import ase.io
import pytest

from conftest import finetune_argv, mace_train, planted_configs, write_xyz

pytestmark = pytest.mark.slow  # every test is a mace_run_train run (loading its data) that stops before the first step


def fails_before_training(argv, work):
    """mace_run_train stops before its first step with one line (a SystemExit, as argparse's own)."""
    with pytest.raises(SystemExit) as failure:
        mace_train(argv)
    assert not list(work.glob("checkpoints/*.pt")), "a training step ran"
    assert not (work / "ft.model").exists()
    message = str(failure.value.code)
    assert message.startswith("mace-e0-plugin: error: ") and "\n" not in message
    return message


def test_linear_system_without_a_foundation_model(foundation, planted_train, tmp_path):
    argv = finetune_argv(foundation, planted_train, tmp_path / "run")
    at = argv.index("--foundation_model")
    del argv[at:at + 2]
    message = fails_before_training(argv, tmp_path / "run")
    assert "--E0s=linear_system" in message and "--foundation_model" in message


def test_wrong_energy_key_means_no_usable_energies(foundation, planted_train, tmp_path):
    argv = finetune_argv(foundation, planted_train, tmp_path / "run")
    argv[argv.index("REF_energy")] = "DFT_energy"
    message = fails_before_training(argv, tmp_path / "run")
    assert "none of the 36 config(s)" in message and "DFT_energy" in message and "--energy_key" in message


def test_zero_energy_weight_everywhere_means_no_usable_energies(foundation, tmp_path):
    configs = planted_configs(foundation, 20, seed=1)
    for atoms in configs:
        atoms.info["config_energy_weight"] = 0.0
    train = write_xyz(tmp_path / "train.xyz", configs)
    message = fails_before_training(finetune_argv(foundation, train, tmp_path / "run"), tmp_path / "run")
    assert "usable energy" in message and str(train) in message


def test_nan_energy_is_refused_and_an_existing_model_is_kept(foundation, tmp_path):
    configs = planted_configs(foundation, 20, seed=2)
    configs[3].info["REF_energy"] = float("nan")
    train = write_xyz(tmp_path / "train.xyz", configs)
    work = tmp_path / "run"
    work.mkdir()
    previous = work / "previous.model"
    previous.write_bytes(b"the user's earlier model")
    argv = finetune_argv(foundation, train, work, "--valid_fraction", "0.05", "--seed", "3")
    message = fails_before_training(argv, work)
    assert "non-finite" in message and "REF_energy" in message
    assert previous.read_bytes() == b"the user's earlier model"


def test_element_missing_from_the_foundation(foundation, tmp_path):
    configs = planted_configs(foundation, 20, seed=4)
    for atoms in configs[:3]:
        atoms.numbers[0] = 7  # nitrogen: the foundation knows H, C, O only
    train = write_xyz(tmp_path / "train.xyz", configs)
    message = fails_before_training(finetune_argv(foundation, train, tmp_path / "run"), tmp_path / "run")
    assert "N (Z=7)" in message and "--foundation_model" in message


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"Xx": -1.0}', "'Xx'"),
    ('{"1": "minus thirteen"}', "finite number"),
    ('{"1": NaN}', "finite number"),
])
def test_malformed_json_prior(foundation, planted_train, tmp_path, content, expected):
    prior = tmp_path / "prior.json"
    prior.write_text(content)
    argv = finetune_argv(foundation, planted_train, tmp_path / "run", "--E0s_prior", str(prior))
    message = fails_before_training(argv, tmp_path / "run")
    assert str(prior) in message and expected in message
    assert prior.read_text() == content


def test_missing_prior_file_and_isolated_atom_file_without_single_atoms(foundation, planted_train, tmp_path):
    argv = finetune_argv(foundation, planted_train, tmp_path / "run", "--E0s_prior", str(tmp_path / "nope.json"))
    assert "no such file" in fails_before_training(argv, tmp_path / "run")

    molecules = tmp_path / "molecules.xyz"
    ase.io.write(molecules, ase.io.read(planted_train, ":3"))
    argv = finetune_argv(foundation, planted_train, tmp_path / "run", "--E0s_prior", str(molecules))
    assert "no single-atom frames" in fails_before_training(argv, tmp_path / "run")


def test_linear_system_on_the_replay_head_is_refused(foundation, planted_train, tmp_path):
    heads = {"pt_head": {"train_file": str(planted_train), "E0s": "linear_system"}}
    argv = finetune_argv(foundation, planted_train, tmp_path / "run", "--heads", json.dumps(heads))
    assert "pt_head" in fails_before_training(argv, tmp_path / "run")


@pytest.mark.parametrize("option, value, what", [("E0s_refit", "sometimes", "use one of none, epoch, final"),
                                                 ("E0s_weighting", "per_config", "use one of per_atom, total"),
                                                 ("E0s_exclude_suspicious", "maybe", "use true or false")])
def test_a_bad_option_in_a_heads_block_is_named_with_its_head(foundation, planted_train, tmp_path, option, value,
                                                              what):
    heads = {"Default": {"train_file": str(planted_train), "E0s": "linear_system", option: value}}
    argv = finetune_argv(foundation, planted_train, tmp_path / "run", "--heads", json.dumps(heads))
    message = fails_before_training(argv, tmp_path / "run")
    assert f"heads.Default.{option}={value}" in message and what in message
