"""mace's own ``mace_run_train --distributed`` on 2 CPU ranks under torchrun (tests/_torchrun_shim.py:
a gloo process group and a DDP without device_ids), with --E0s=linear_system and
--E0s_refit=epoch+final: the first estimate is the single-process one, every config counts once,
every rank's model holds the same E0s, rank 0 alone reports and logs, and the saved models hold
the report's E0s. Two runs: the tutorial xTB model on 80 solvent configs (../shared), and the toy
foundation in multihead fine-tuning with replay data and --swa. A third run starts the ranks as
Slurm does, for mace's default --launcher=slurm."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import ase.io
import pytest
import torch

from conftest import PROJECT, SHIFTS, expected_e0s, planted_configs, shared_path, write_xyz

from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.glue import read_provenance

pytestmark = pytest.mark.slow

SHIM = PROJECT / "tests" / "_torchrun_shim.py"
N_RANKS = 2
TORCHRUN_TIMEOUT_S = 300  # each run takes ~20 s on 2 cores; a hung collective fails the test instead
SAME_AS_SINGLE_PROCESS_EV = 1e-8
N_SOLVENT_CONFIGS = 80
ELEMENTS = ("1", "6", "8")

FIRST_ESTIMATE_LINE = "E0 re-estimation for head 'Default'"
REPORT_LINE = "--E0s=linear_system: report with the E0s of the saved model(s) written to"


@dataclass
class DistributedRun:
    work_dir: Path
    train_file: Path
    stdout: str
    log: str
    report: dict
    ranks: List[Dict[str, torch.Tensor]]  # per rank: the E0s at the first and last training step, and after main()
    single: Dict[str, float] = None  # the single-process first estimate on the same data
    foundation: object = None


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(argv: List[str], work_dir: Path, launcher: str = "torchrun") -> DistributedRun:
    """mace_run_train --distributed on N_RANKS CPU ranks, started by torchrun or, for mace's
    default --launcher=slurm, one process per rank with Slurm's variables; kills them all past the
    time bound."""
    dump_dir = work_dir / "rank-e0s"
    dump_dir.mkdir(parents=True)
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MACE_E0_SHIM_DUMP_DIR=str(dump_dir),
                       PYTHONPATH=os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]))
    if launcher == "torchrun":
        commands = [([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={N_RANKS}",
                      str(SHIM), *argv, "--distributed", "--launcher=torchrun", "--device=cpu"], environment)]
    else:
        # What sbatch sets for N tasks on one node (mace 0.3.16 reads SLURM_NTASKS_PER_NODE and
        # SLURM_NNODES even where SLURM_NTASKS is set: its fallback is evaluated first).
        slurm = dict(environment, SLURM_JOB_NODELIST="localhost", SLURM_NNODES="1", SLURM_NTASKS=str(N_RANKS),
                     SLURM_NTASKS_PER_NODE=str(N_RANKS), MASTER_PORT=str(free_port()))
        commands = [([sys.executable, str(SHIM), *argv, "--distributed", "--device=cpu"],
                     dict(slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank))) for rank in range(N_RANKS)]
    processes = [subprocess.Popen(command, cwd=work_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True) for command, env in commands]
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=TORCHRUN_TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            for each in processes:
                os.killpg(each.pid, signal.SIGKILL)  # the launcher and every rank it started
            pytest.fail(f"mace_run_train --distributed ({launcher}) hung: killed after {TORCHRUN_TIMEOUT_S} s\n"
                        f"{process.communicate()[0][-3000:]}")
        assert process.returncode == 0, outputs[-1][-5000:]
    stdout = "".join(outputs)
    run_dir = work_dir / "run"
    return DistributedRun(
        work_dir=run_dir, train_file=Path(argv[argv.index("--train_file") + 1]), stdout=stdout,
        log=(run_dir / "logs" / "ft_run-1.log").read_text(),
        report=json.loads((run_dir / "results" / "ft_E0s_linear_system.json").read_text()),
        ranks=[torch.load(dump_dir / f"rank{rank}.pt") for rank in range(N_RANKS)])


def common_argv(foundation_path: Path, train: Path, valid: Path, *extra: str) -> List[str]:
    # --valid_file, not --valid_fraction: every training config is then in the estimate.
    return ["--name", "ft", "--work_dir", "run", "--seed", "1", "--foundation_model", str(foundation_path),
            "--train_file", str(train), "--valid_file", str(valid), "--energy_key", "REF_energy",
            "--forces_key", "REF_forces", "--batch_size", "8", "--valid_batch_size", "16",
            "--default_dtype", "float64", "--E0s", "linear_system", "--E0s_refit", "epoch+final",
            "--E0s_dtype", "float64", "--plot", "False", *extra]  # float64 passes: equal to 1e-8 eV


def single_process_e0s(model_path: Path, train: Path) -> Dict[str, float]:
    """The first estimate of one process: same data, weighting, prior and dtype."""
    from mace_e0_plugin import reestimate_e0s

    result = reestimate_e0s(str(model_path), [str(train)], "REF_energy", prior="foundation", weighting="per_atom",
                            device="cpu", dtype="float64", progress=False)
    return {str(z): e for z, e in result.e0s.items()}


def row(e0s: Dict[str, float]) -> List[float]:
    return [e0s[z] for z in ELEMENTS]


def saved_rows(path: Path) -> torch.Tensor:
    model = torch.load(path, map_location="cpu", weights_only=False)
    return model.atomic_energies_fn.atomic_energies.detach().double()


def checkpoint_rows(path: Path) -> torch.Tensor:
    return torch.load(path, map_location="cpu", weights_only=False)["model"][
        "atomic_energies_fn.atomic_energies"].double()


# -- the tutorial xTB model on 80 solvent configs (../shared) --------------------------------------

@pytest.fixture(scope="module")
def solvent_run(tmp_path_factory) -> DistributedRun:
    model = shared_path("models", "mace_tutorial_cho_xtb_swa.model")
    data = shared_path("data", "solvent-xtb")
    folder = tmp_path_factory.mktemp("mace-distributed-solvent")
    molecules = [a for a in ase.io.read(data / "solvent_train.xyz", ":") if a.info.get("config_type") != "IsolatedAtom"]
    train = write_xyz(folder / "train.xyz", molecules[:N_SOLVENT_CONFIGS])
    valid = write_xyz(folder / "valid.xyz", ase.io.read(data / "solvent_test.xyz", ":10"))
    run = launch(common_argv(model, train, valid, "--max_num_epochs", "2"), folder)
    run.single = single_process_e0s(model, train)
    return run


@pytest.mark.shared
def test_solvent_first_estimate_equals_the_single_process_one_and_counts_80_configs(solvent_run):
    head = solvent_run.report["heads"]["Default"]
    assert head["n_configs"] == N_SOLVENT_CONFIGS
    assert row(head["estimated_E0s"]) == pytest.approx(row(solvent_run.single), abs=SAME_AS_SINGLE_PROCESS_EV)
    # What every rank's model held at the first training step is that estimate (float64 model).
    for rank in solvent_run.ranks:
        assert rank["first_training_step"][0].tolist() == pytest.approx(row(head["estimated_E0s"]), abs=1e-12)


@pytest.mark.shared
def test_solvent_every_rank_holds_the_same_e0s(solvent_run):
    first, *others = solvent_run.ranks
    for when in ("first_training_step", "last_training_step", "after_main"):
        for other in others:
            assert torch.equal(other[when], first[when]), when
    # The epoch refits did change them (so the comparison above is of refitted E0s too).
    assert not torch.equal(first["first_training_step"], first["last_training_step"])


@pytest.mark.shared
def test_solvent_one_report_and_the_saved_models_hold_its_e0s(solvent_run):
    assert solvent_run.stdout.count(REPORT_LINE) == 1
    assert [p.name for p in (solvent_run.work_dir / "results").glob("*.json")] == ["ft_E0s_linear_system.json"]
    kinds = [(r["kind"], r["epoch"], r["checkpoint"]) for r in solvent_run.report["refits"]]
    assert kinds == [("epoch", 0, None), ("epoch", 1, None), ("final", 1, "ft_run-1_epoch-1.pt")]
    final = row(solvent_run.report["heads"]["Default"]["E0s"])
    assert final == row(solvent_run.report["refits"][-1]["E0s"])
    assert saved_rows(solvent_run.work_dir / "ft.model")[0].tolist() == final
    assert checkpoint_rows(solvent_run.work_dir / "checkpoints" / "ft_run-1_epoch-1.pt")[0].tolist() == final
    for rank in solvent_run.ranks:  # every rank reloaded the refitted checkpoint
        assert rank["after_main"][0].tolist() == final


SOLVENT_LOG_LINES = [
    FIRST_ESTIMATE_LINE,
    "E0 refit, head 'Default', epoch 0:",
    "E0 refit, head 'Default', epoch 1:",
    "E0 refit, head 'Default', final, checkpoint ft_run-1_epoch-1.pt",  # once: it was logged by every rank
]


@pytest.mark.shared
@pytest.mark.parametrize("line", SOLVENT_LOG_LINES)
def test_solvent_each_e0_log_line_appears_once(solvent_run, line):
    # mace's rank filter sits on the root logger only, so the plugin's records of rank 1 reach the
    # same handlers (stdout, and the shared log file): rank 0 alone must log.
    assert solvent_run.log.count(line) == 1
    assert solvent_run.stdout.count(line) == 1


# -- the toy foundation: multihead fine-tuning with replay data, and --swa -------------------------

N_TUNED, N_REPLAY = 30, 60


def toy_foundation(folder: Path):
    from conftest import Foundation

    model = synthetic.build_foundation(synthetic.LEVEL_A.e0s, seed=7)
    foundation = Foundation(path=folder / "foundation.model", model=model, e0s=dict(synthetic.LEVEL_A.e0s))
    torch.save(model, foundation.path)
    return foundation


@pytest.fixture(scope="module")
def multihead_swa_run(tmp_path_factory) -> DistributedRun:
    folder = tmp_path_factory.mktemp("mace-distributed-multihead")
    foundation = toy_foundation(folder)
    train = write_xyz(folder / "train.xyz", planted_configs(foundation, N_TUNED, seed=21))
    valid = write_xyz(folder / "valid.xyz", planted_configs(foundation, 6, seed=22))
    replay = write_xyz(folder / "replay.xyz", synthetic.label(synthetic.random_configs(N_REPLAY, seed=23),
                                                              synthetic.LEVEL_A))
    run = launch(common_argv(foundation.path, train, valid, "--multiheads_finetuning", "True",
                               "--pt_train_file", str(replay), "--force_mh_ft_lr", "True",
                               "--real_pt_data_ratio_threshold", "0.5", "--swa", "--start_swa", "1",
                               "--max_num_epochs", "2", "--lr", "0.02"), folder)
    run.single = single_process_e0s(foundation.path, train)
    run.foundation = foundation
    return run


def test_multihead_first_estimate_equals_the_single_process_one_and_leaves_pt_head_alone(multihead_swa_run):
    run = multihead_swa_run
    assert list(run.report["heads"]) == ["Default"]
    head = run.report["heads"]["Default"]
    assert head["n_configs"] == N_TUNED  # no replay config, no copy made to balance the replay set
    assert row(head["estimated_E0s"]) == pytest.approx(row(run.single), abs=SAME_AS_SINGLE_PROCESS_EV)
    assert row(head["estimated_E0s"]) == pytest.approx(expected_e0s(run.foundation, SHIFTS).tolist(), abs=1e-6)
    foundation_row = [run.foundation.e0s[z] for z in (1, 6, 8)]
    for rank in run.ranks:
        for when in ("first_training_step", "last_training_step", "after_main"):
            assert rank[when][0].tolist() == foundation_row, when  # pt_head row
        assert rank["first_training_step"][1].tolist() == pytest.approx(row(head["estimated_E0s"]), abs=1e-12)


def test_multihead_every_rank_holds_the_same_e0s(multihead_swa_run):
    first, *others = multihead_swa_run.ranks
    for when in ("first_training_step", "last_training_step", "after_main"):
        for other in others:
            assert torch.equal(other[when], first[when]), when


def test_multihead_swa_saved_models_hold_the_refits_of_their_checkpoints(multihead_swa_run):
    run = multihead_swa_run
    assert run.stdout.count(REPORT_LINE) == 1
    kinds = [(r["kind"], r["epoch"], r["checkpoint"]) for r in run.report["refits"]]
    assert kinds == [("epoch", 0, None), ("epoch", 1, None), ("final", 0, "ft_run-1_epoch-0.pt"),
                     ("final", 1, "ft_run-1_epoch-1_swa.pt")]
    final = {r["checkpoint"]: row(r["E0s"]) for r in run.report["refits"] if r["kind"] == "final"}
    for saved, checkpoint in (("ft.model", "ft_run-1_epoch-0.pt"), ("ft_stagetwo.model", "ft_run-1_epoch-1_swa.pt")):
        assert saved_rows(run.work_dir / saved)[1].tolist() == final[checkpoint], saved
        assert checkpoint_rows(run.work_dir / "checkpoints" / checkpoint)[1].tolist() == final[checkpoint]
    # The report's E0s are those of the last model mace saves: stage two's.
    assert row(run.report["heads"]["Default"]["E0s"]) == final["ft_run-1_epoch-1_swa.pt"]
    for saved in ("ft.model", "ft_stagetwo.model"):  # both carry the E0s' provenance
        provenance = read_provenance(torch.load(run.work_dir / saved, weights_only=False))
        assert list(provenance) == ["Default"] and provenance["Default"]["n_configs"] == N_TUNED
        assert provenance["Default"]["n_refits"] == 4
    for rank in run.ranks:  # mace reloaded the stage-two checkpoint last, on every rank
        assert rank["after_main"][1].tolist() == final["ft_run-1_epoch-1_swa.pt"]


MULTIHEAD_LOG_LINES = [
    FIRST_ESTIMATE_LINE,
    "E0 refit, head 'Default', epoch 0:",
    "E0 refit, head 'Default', epoch 1:",
    *[f"E0 refit, head 'Default', final, checkpoint {checkpoint}"
      for checkpoint in ("ft_run-1_epoch-0.pt", "ft_run-1_epoch-1_swa.pt")],
]


@pytest.mark.parametrize("line", MULTIHEAD_LOG_LINES)
def test_multihead_each_e0_log_line_appears_once(multihead_swa_run, line):
    assert multihead_swa_run.log.count(line) == 1
    assert multihead_swa_run.stdout.count(line) == 1


# -- mace's default --launcher=slurm: the ranks started as Slurm starts them -------------------------

N_SLURM_CONFIGS = 24


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> DistributedRun:
    folder = tmp_path_factory.mktemp("mace-distributed-slurm")
    foundation = toy_foundation(folder)
    train = write_xyz(folder / "train.xyz", planted_configs(foundation, N_SLURM_CONFIGS, seed=31))
    valid = write_xyz(folder / "valid.xyz", planted_configs(foundation, 4, seed=32))
    run = launch(common_argv(foundation.path, train, valid, "--max_num_epochs", "1"), folder, launcher="slurm")
    run.foundation = foundation
    return run


def test_slurm_launcher_estimates_on_every_config_once_and_saves_the_provenance(slurm_run):
    run = slurm_run
    assert "Processes: 2" in run.log  # mace's own distributed set-up, from Slurm's variables
    head = run.report["heads"]["Default"]
    assert head["n_configs"] == N_SLURM_CONFIGS
    assert row(head["estimated_E0s"]) == pytest.approx(expected_e0s(run.foundation, SHIFTS).tolist(), abs=1e-6)
    assert [(r["kind"], r["epoch"]) for r in run.report["refits"]] == [("epoch", 0), ("final", 0)]
    model = torch.load(run.work_dir / "ft.model", weights_only=False)
    assert model.atomic_energies_fn.atomic_energies[0].tolist() == row(head["E0s"])
    provenance = read_provenance(model)["Default"]
    assert (provenance["n_configs"], provenance["n_refits"]) == (N_SLURM_CONFIGS, 2)
    first, second = run.ranks
    assert torch.equal(first["after_main"], second["after_main"])
