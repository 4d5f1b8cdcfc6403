"""mace-e0 estimate / show / apply, their bad inputs, and agreement with an independent NumPy fit."""

import argparse
import functools
import json
import re

import ase.io
import numpy as np
import pytest
import torch

from conftest import (PYTHON, SHIFTS, add_noise, closed_form_e0s, mace_train, planted_configs, run_command, saved_e0s,
                      shared_path, write_xyz)
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.doors import (EXIT_BAD_INPUT, EXIT_CRASH, EXIT_FLAGGED, EXIT_MEANINGS, EXIT_OK, EXIT_OUTSIDE,
                                  build_parser, main)
from mace_e0_plugin.doors import _cli as cli_module
from mace_e0_plugin.doors._cli import EXIT_TABLE
from mace_e0_plugin.services import FLAG, OPTIONS, POSITIONAL, default_workers


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv):
    code, _, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code != 0 and lines and "Traceback" not in err
    assert lines[-1].startswith("mace-e0: error: ")
    return lines[-1]


def test_estimate_writes_the_training_report_schema_e0s_json_and_figure(foundation, planted_train, tmp_path, capsys):
    report, e0s, figure = tmp_path / "report.json", tmp_path / "e0s.json", tmp_path / "e0s.png"
    code, out, _ = cli(capsys, "estimate", foundation.path, planted_train, "--energy-key", "REF_energy",
                       "--output", report, "--e0s-json", e0s, "--plot", figure, "--batch-size", 7)
    assert code == 0 and "rank 3 / 3 elements" in out

    content = json.loads(report.read_text())
    assert set(content) == {"heads", "timing"} and set(content["timing"]) >= {"inference_s", "solve_s"}
    head = content["heads"]["Default"]
    assert head["n_configs"] == 40 and head["weighting"] == "per_atom"
    assert head["corrections"] == pytest.approx({str(z): s for z, s in SHIFTS.items()}, abs=1e-6)
    assert json.loads(e0s.read_text()) == head["E0s"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 20_000


@pytest.mark.slow
def test_mace_run_train_accepts_the_e0s_json(foundation, planted_train, tmp_path, capsys):
    e0s = tmp_path / "e0s.json"
    assert cli(capsys, "estimate", foundation.path, planted_train, "--energy-key", "REF_energy",
               "--e0s-json", e0s)[0] == 0
    argv = ["--name", "scratch", "--work_dir", str(tmp_path / "run"), "--train_file", str(planted_train),
            "--valid_fraction", "0.1", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
            "--E0s", str(e0s), "--model", "MACE", "--num_channels", "8", "--max_L", "0", "--r_max", "4.0",
            "--max_num_epochs", "1", "--batch_size", "8", "--device", "cpu", "--default_dtype", "float64"]
    mace_train(argv)
    written = json.loads(e0s.read_text())
    assert saved_e0s(tmp_path / "run" / "scratch.model")[0].tolist() == [written[k] for k in ("1", "6", "8")]


def test_graphs_built_in_dataloader_workers_give_the_same_e0s(foundation, planted_train, tmp_path, capsys):
    reports = []
    for workers in (0, 2):
        output = tmp_path / f"workers{workers}.json"
        assert cli(capsys, "estimate", foundation.path, planted_train, "--energy-key", "REF_energy",
                   "--num-workers", workers, "--output", output)[0] == 0
        reports.append(json.loads(output.read_text())["heads"]["Default"])
    assert reports[0]["n_configs"] == reports[1]["n_configs"] == 40
    assert reports[1]["E0s"] == pytest.approx(reports[0]["E0s"], abs=1e-10)


@pytest.mark.parametrize("weighting", ["per_atom", "total"])
def test_each_weighting_is_its_own_closed_form_where_they_differ(foundation, tmp_path, capsys, weighting):
    configs = add_noise(planted_configs(foundation, 30, seed=41), seed=42)  # noisy, of 4 to 12 atoms
    data = write_xyz(tmp_path / "data.xyz", configs)
    report = tmp_path / "report.json"
    assert cli(capsys, "estimate", foundation.path, data, "--energy-key", "REF_energy", "--weighting", weighting,
               "--dtype", "float64", "--output", report)[0] == 0
    head = json.loads(report.read_text())["heads"]["Default"]
    own, other = (closed_form_e0s(foundation.model, configs, w)
                  for w in (weighting, {"per_atom": "total", "total": "per_atom"}[weighting]))
    assert head["E0s"] == pytest.approx({str(z): e for z, e in own.items()}, abs=1e-8)
    assert max(abs(own[z] - other[z]) for z in own) > 1e-3  # the two weightings really differ here


def test_total_weighting_and_a_prior_file(foundation, tmp_path, capsys):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 20, seed=5, stoichiometry={1: 2, 8: 1}))
    prior = tmp_path / "isolated.xyz"
    ase.io.write(prior, synthetic.isolated_atoms(synthetic.LEVEL_B))
    report = tmp_path / "report.json"
    assert cli(capsys, "estimate", foundation.path, train, "--energy-key", "REF_energy", "--weighting", "total",
               "--prior", prior, "--output", report)[0] == 0
    head = json.loads(report.read_text())["heads"]["Default"]
    assert head["weighting"] == "total" and head["rank"] == 1 and head["n_elements"] == 2
    assert head["determined_combinations"] == ["2 H + O"]
    assert head["E0s"]["6"] == synthetic.LEVEL_B.e0s[6]  # carbon is not in the data: the prior
    water = 2 * head["E0s"]["1"] + head["E0s"]["8"]
    assert water == pytest.approx(2 * (foundation.e0s[1] + SHIFTS[1]) + foundation.e0s[8] + SHIFTS[8], abs=1e-6)


def test_show_apply_show_round_trips_exact_values(foundation, tmp_path, capsys):
    new = {"1": -13.123456789012345, "8": -2041.9876543210987}
    e0s = tmp_path / "e0s.json"
    e0s.write_text(json.dumps(new))
    output = tmp_path / "new.model"
    code, out, _ = cli(capsys, "apply", foundation.path, e0s, "--output", output)
    assert code == 0 and "kept C" in out

    code, out, _ = cli(capsys, "show", output)
    assert code == 0 and "heads: Default" in out and "r_max 4.5" in out and "float64" in out
    shown = {line.split()[1]: float(line.split()[2]) for line in out.splitlines() if line.startswith("  ") and "E0" not in line}
    assert shown == {"1": new["1"], "6": foundation.e0s[6], "8": new["8"]}
    original = torch.load(foundation.path, weights_only=False)
    copy = torch.load(output, weights_only=False)
    changed = [k for k, v in original.state_dict().items() if not torch.equal(v, copy.state_dict()[k])]
    assert changed == ["atomic_energies_fn.atomic_energies"]


def test_apply_refuses_to_write_over_the_model_or_to_add_elements(foundation, tmp_path, capsys):
    model = tmp_path / "model.model"
    model.write_bytes(foundation.path.read_bytes())
    e0s = tmp_path / "e0s.json"
    e0s.write_text(json.dumps({"1": -1.0}))
    assert "is MODEL itself" in one_line_error(capsys, "apply", model, e0s, "--output", model)
    assert model.read_bytes() == foundation.path.read_bytes()
    assert cli(capsys, "apply", model, e0s, "--output", model, "--force")[0] == 0
    assert saved_e0s(model)[0, 0].item() == -1.0

    e0s.write_text(json.dumps({"Cl": -1.0}))
    assert "the model has no Cl" in one_line_error(capsys, "apply", model, e0s, "--output", tmp_path / "x.model")


def test_bad_input_gets_one_line_and_a_non_zero_exit(foundation, planted_train, tmp_path, capsys):
    garbage = tmp_path / "garbage.model"
    garbage.write_text("not a model")
    assert "cannot read it as a MACE model" in one_line_error(capsys, "show", garbage)
    assert "no such file" in one_line_error(capsys, "show", tmp_path / "missing.model")

    broken = tmp_path / "broken.xyz"
    broken.write_text("3\nnot an extxyz header\nH 0 0\n")
    assert "ASE cannot read it" in one_line_error(capsys, "estimate", foundation.path, broken, "--energy-key", "E")

    estimate = ["estimate", foundation.path, planted_train]
    assert "no config has an energy under --energy-key DFT" in one_line_error(capsys, *estimate, "--energy-key", "DFT")
    assert "no such head; its heads are Default" in one_line_error(
        capsys, *estimate, "--energy-key", "REF_energy", "--head", "mp2")

    configs = ase.io.read(planted_train, ":")
    configs[2].numbers[0] = 17
    chlorine = write_xyz(tmp_path / "chlorine.xyz", configs)
    assert "config 2 contains Cl" in one_line_error(capsys, "estimate", foundation.path, chlorine, "--energy-key", "REF_energy")

    prior = tmp_path / "prior.json"
    prior.write_text('{"1": "x"}')
    assert "finite number" in one_line_error(capsys, *estimate, "--energy-key", "REF_energy", "--prior", prior)
    assert "finite number" in one_line_error(capsys, "apply", foundation.path, prior, "--output", tmp_path / "n.model")

    existing = tmp_path / "report.json"
    existing.write_text("{}")
    assert "pass --force" in one_line_error(capsys, *estimate, "--energy-key", "REF_energy", "--output", existing)
    assert existing.read_text() == "{}"


def test_the_parser_is_built_from_the_declarations():
    """A flag is a bare --flag because its declaration says FLAG, a positional because it says
    POSITIONAL; the other options take a value."""
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # pylint: disable=protected-access
    for subparser in commands.choices.values():
        for action in subparser._actions:  # pylint: disable=protected-access
            option = OPTIONS.get(action.dest)
            if option is None:
                continue
            assert isinstance(action, argparse._StoreTrueAction) == (option.kind == FLAG), action.dest  # pylint: disable=protected-access
            assert (not action.option_strings) == (option.kind == POSITIONAL), action.dest


def test_each_commands_exit_statuses_come_from_the_one_table():
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # pylint: disable=protected-access
    for command, own, other in (("check", EXIT_OUTSIDE, EXIT_FLAGGED), ("diagnose", EXIT_FLAGGED, EXIT_OUTSIDE)):
        description = commands.choices[command].description
        for code in (EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, own):
            general, by_command = EXIT_TABLE[code]
            assert f"{code} {by_command.get(command) or general}" in description
        assert f"; {other} " not in description
    assert all(f"{code} {text}" in parser.epilog for code, text in EXIT_MEANINGS.items())


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 0), (3, 0), (4, 1), (8, 2), (15, 3), (16, 4), (64, 4)])
def test_the_default_workers_rule(cores, workers):
    assert default_workers(cores) == workers


def test_without_num_workers_the_cli_takes_the_default_rule(monkeypatch):
    monkeypatch.setattr(cli_module, "default_workers", lambda: 3)
    args = cli_module._checked_args(build_parser().parse_args(["diagnose", "m.model", "d.xyz", "--energy-key", "E",  # pylint: disable=protected-access
                                                               "--forces-key", "F", "--device", "cpu"]))
    assert args.num_workers == 3 and args.force is False


@pytest.mark.slow  # two fresh interpreters that import torch and mace (~9 s of CPU); the commands run in-process above
def test_console_script_and_python_m(foundation, tmp_path):
    for command in (["mace-e0"], [PYTHON, "-m", "mace_e0_plugin"]):
        result = run_command(command + ["show", str(foundation.path)], cwd=tmp_path)
        assert result.returncode == 0 and "-2041.8" in result.stdout, result.stderr


# Enough to hold each set's rank (3 of 3, 2 of 3) with noise in the fit; mace's calculator runs them one by one.
INDEPENDENT_FIT_FRAMES = 40


def multi_atom_frames(path):
    return [a for a in ase.io.read(path, ":") if len(a) > 1][:INDEPENDENT_FIT_FRAMES]


@functools.lru_cache(maxsize=None)
def calculator_energies(model_path, data_path) -> tuple:
    """mace's own ASE calculator, one config at a time, on multi_atom_frames(data_path): once per
    file, as both weightings compare with the same predictions."""
    from mace.calculators import MACECalculator

    calculator = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    return tuple(calculator.get_potential_energy(a) for a in multi_atom_frames(data_path))


def multi_atom_frames(path):
    return [a for a in ase.io.read(path, ":") if len(a) > 1][:150]


@functools.lru_cache(maxsize=None)
def calculator_energies(model_path, data_path) -> tuple:
    """mace's own ASE calculator, one config at a time, on multi_atom_frames(data_path): once per
    file, as both weightings compare with the same predictions."""
    from mace.calculators import MACECalculator

    calculator = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    return tuple(calculator.get_potential_energy(a) for a in multi_atom_frames(data_path))


@pytest.mark.shared
@pytest.mark.parametrize("weighting", ["per_atom", "total"])
@pytest.mark.parametrize("dataset, prior", [
    (("solvent-xtb", "solvent_train.xyz"), "foundation"),  # full rank
    (("ethanol-methanol-pbe", "train_eth_meth.xyz"), ("ethanol-methanol-pbe", "isolated_atoms.xyz")),  # rank 2 of 3
])
def test_estimate_agrees_with_an_independent_numpy_svd_fit(tmp_path, capsys, weighting, dataset, prior):
    model_path = shared_path("models", "mace01_cho_xtb.model")
    frames = multi_atom_frames(shared_path("data", *dataset))
    data = write_xyz(tmp_path / "data.xyz", frames)
    prior_arg = prior if prior == "foundation" else shared_path("data", *prior)
    report = tmp_path / "report.json"
    assert cli(capsys, "estimate", model_path, data, "--energy-key", "REF_energy", "--weighting", weighting,
               "--prior", prior_arg, "--output", report, "--dtype", "float64")[0] == 0
    head = json.loads(report.read_text())["heads"]["Default"]

    # Independently: mace's own ASE calculator, one config at a time, and NumPy's SVD.
    predicted = np.array(calculator_energies(model_path, shared_path("data", *dataset)))
    reference = np.array([a.info["REF_energy"] for a in frames])
    elements = [1, 6, 8]
    counts = np.array([[np.sum(a.numbers == z) for z in elements] for a in frames], dtype=float)
    start = np.array([head["starting_E0s"][str(z)] for z in elements])
    if prior == "foundation":
        anchor = start
    else:
        isolated = {int(a.numbers[0]): a.info["REF_energy"] for a in ase.io.read(prior_arg, ":")}
        anchor = np.array([isolated[z] for z in elements])
    sqrt_w = 1.0 / counts.sum(1) if weighting == "per_atom" else np.ones(len(frames))
    weighted = sqrt_w[:, None] * counts
    offset = anchor - start
    correction = offset + np.linalg.pinv(weighted, rcond=1e-8) @ (sqrt_w * (reference - predicted - counts @ offset))
    expected = start + correction
    assert [head["E0s"][str(z)] for z in elements] == pytest.approx(expected.tolist(), abs=1e-4)
    assert head["rank"] == np.linalg.matrix_rank(counts)


def test_a_float32_model_runs_in_float32_and_keeps_float64_accuracy(foundation, planted_train, tmp_path, capsys):
    model = tmp_path / "float32.model"
    torch.save(torch.load(foundation.path, weights_only=False).float(), model)
    heads = []
    for name, extra in (("own", []), ("float64", ["--dtype", "float64"])):
        output = tmp_path / f"{name}.json"
        assert cli(capsys, "estimate", model, planted_train, "--energy-key", "REF_energy", "--output", output,
                   *extra)[0] == 0
        heads.append(json.loads(output.read_text())["heads"]["Default"])
    # Float32 totals (energies and predictions of thousands of eV) put the E0s 7e-5 eV off here;
    # with float64 graphs and the E0 part summed in float64 they are 2e-8 eV off.
    assert heads[0]["E0s"] == pytest.approx(heads[1]["E0s"], abs=1e-6)
    assert heads[0]["corrections"] != heads[1]["corrections"]  # the network did run in float32


@pytest.mark.shared
@pytest.mark.slow  # two fresh interpreters that import torch and mace (~9 s of CPU): the notices show at import only
def test_mace_e0_prints_no_third_party_noise_unless_verbose(tmp_path):
    model = shared_path("models", "mace01_cho_xtb.model")
    quiet = run_command(["mace-e0", "show", str(model)], cwd=tmp_path)
    assert quiet.returncode == 0 and "-10.707211383396714" in quiet.stdout  # H's E0, exactly
    noise = [line for line in (quiet.stdout + quiet.stderr).splitlines()
             if re.search("cuequivariance|warning", line, re.IGNORECASE)]
    assert noise == []
    loud = run_command(["mace-e0", "--verbose", "show", str(model)], cwd=tmp_path)
    assert loud.returncode == 0 and "cuequivariance" in loud.stdout + loud.stderr
