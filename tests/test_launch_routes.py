"""Every way people launch mace's training, end to end on the toy foundation: the saved model
carries the planted E0s and their provenance. (torchrun and mace's default --launcher=slurm are in
test_mace_distributed.py.)"""

import sys
from pathlib import Path

import mace
import pytest
import torch

from conftest import (PYTHON, expected_e0s, finetune_argv, mace_globals_restored, mace_train, planted_configs, report,
                      run_command, saved_e0s, write_xyz)
from mace_e0_plugin.services import OPTIONS
from mace_e0_plugin.glue import read_provenance
from mace_e0_plugin.training._mace_args import OUR_OPTIONS

RUN_TRAIN_SCRIPT = Path(mace.__file__).parent / "cli" / "run_train.py"


def assert_the_plugin_ran(work: Path, foundation, head: str = "Default", n_configs: int = 36):
    """The first estimate found the planted shifts, the saved model holds the report's E0s (the
    final refit's, where there was one), and it says how it got them."""
    entry = report(work)["heads"][head]
    first = entry.get("estimated_E0s", entry["E0s"])
    assert [first[str(z)] for z in (1, 6, 8)] == pytest.approx(expected_e0s(foundation).tolist(), abs=1e-6)
    model = torch.load(work / "ft.model", weights_only=False)
    row = saved_e0s(work / "ft.model")[model.heads.index(head)]
    assert row.tolist() == [entry["E0s"][str(z)] for z in (1, 6, 8)]
    provenance = read_provenance(model)[head]
    assert provenance["method"] == "linear_system" and provenance["n_configs"] == n_configs
    return entry


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ["mace_run_train"],
    [PYTHON, "-m", "mace.cli.run_train"],
    [PYTHON, str(RUN_TRAIN_SCRIPT)],  # as the mace-foundations training scripts launch it
], ids=["console-script", "python-m", "script-file"])
def test_each_command_line_route(foundation, planted_train, tmp_path, launcher):
    work = tmp_path / "run"
    result = run_command(launcher + finetune_argv(foundation, planted_train, work), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "RMSE of E per atom" in result.stdout  # the estimate's table, in mace's log
    assert_the_plugin_ran(work, foundation)


@pytest.mark.slow
def test_main_from_python(foundation, planted_train, tmp_path, monkeypatch):
    from mace.cli.run_train import main

    monkeypatch.setattr(sys, "argv", ["mace_run_train", *finetune_argv(foundation, planted_train, tmp_path / "run")])
    with mace_globals_restored():
        main()
    assert_the_plugin_ran(tmp_path / "run", foundation)


@pytest.mark.slow
def test_run_from_python(foundation, planted_train, tmp_path):
    mace_train(finetune_argv(foundation, planted_train, tmp_path / "run"))  # tools' parser, then run(args)
    assert_the_plugin_ran(tmp_path / "run", foundation)


# Every option of ours, in mixed case where it is a choice: mace reads per-head E0s in any case.
YAML_OPTIONS = {"E0s_prior": "foundation", "E0s_weighting": "Per_Atom", "E0s_refit": "Final",
                "E0s_exclude_suspicious": "False", "E0s_dtype": "Float64"}
HEAD = "dft"


def write_config(foundation, train: Path, folder: Path, work_dir: bool = True) -> Path:
    """A --config YAML with every E0s_* option and a heads: block whose head overrides one."""
    lines = ["name: ft", "seed: 1", f"foundation_model: {foundation.path}", "valid_fraction: 0.1",
             "energy_key: REF_energy", "forces_key: REF_forces", "max_num_epochs: 1", "batch_size: 8",
             "valid_batch_size: 16", "device: cpu", "default_dtype: float64", "E0s: average"]
    if work_dir:
        lines.append(f"work_dir: {folder / 'run'}")
    lines += [f"{key}: {value}" for key, value in YAML_OPTIONS.items()]
    lines += ["heads:", f"  {HEAD}:", f"    train_file: {train}", "    E0s: Linear_System", "    E0s_weighting: TOTAL"]
    config = folder / "config.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def test_the_yaml_names_every_option_of_ours():
    assert set(YAML_OPTIONS) == {OPTIONS[name].train.lstrip("-") for name in OUR_OPTIONS}


def check_yaml_run(work: Path, foundation):
    head = assert_the_plugin_ran(work, foundation, head=HEAD)
    assert head["weighting"] == "total"  # the head's own value wins over the top level's
    assert head["pass_dtype"] == "float64" and head["prior"]["kind"] == "foundation"
    assert head["n_excluded_suspicious"] == 0
    content = report(work)
    assert [(r["kind"], r["head"]) for r in content["refits"]] == [("final", HEAD)]
    return content


@pytest.fixture(scope="module")
def yaml_run(foundation, tmp_path_factory):
    folder = tmp_path_factory.mktemp("yaml")
    train = write_xyz(folder / "train.xyz", planted_configs(foundation, 40, seed=11))
    config = write_config(foundation, train, folder)
    from mace import tools
    from mace.cli import run_train

    args = tools.build_default_arg_parser().parse_args(["--config", str(config)])
    with mace_globals_restored():
        run_train.run(args)
    return folder, train


@pytest.mark.slow
def test_config_yaml_with_every_option_and_a_heads_block(foundation, yaml_run):
    folder, _ = yaml_run
    check_yaml_run(folder / "run", foundation)


@pytest.mark.slow
def test_janus_core_train_carries_the_same_yaml(foundation, yaml_run, tmp_path):
    pytest.importorskip("janus_core", reason="janus-core is not installed (it needs Python >= 3.11; "
                                             "pip install '.[test]' installs it there)")
    folder, train = yaml_run
    config = write_config(foundation, train, tmp_path, work_dir=False)  # janus gives mace its --work_dir
    result = run_command(["janus", "train", "mace", "--mlip-config", str(config), "--fine-tune",
                          "--file-prefix", str(tmp_path / "run"), "--no-tracker"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    janus = check_yaml_run(tmp_path / "run", foundation)
    direct = report(folder / "run")
    assert janus["heads"][HEAD]["E0s"] == direct["heads"][HEAD]["E0s"]
    models = [torch.load(work / "ft.model", weights_only=False) for work in (tmp_path / "run", folder / "run")]
    janus_provenance, direct_provenance = (read_provenance(m)[HEAD] for m in models)
    assert janus_provenance == direct_provenance
