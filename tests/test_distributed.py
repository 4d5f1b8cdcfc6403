"""torch.distributed (gloo, CPU): every rank collects its shard, the statistics are combined with
one all-reduce, and all ranks write the same E0s, equal to the single-process ones. The data are
noisy, so a rank that fitted its own shard alone would give other E0s."""

import json

import pytest
import torch
import torch.multiprocessing as mp
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import ConcatDataset

from conftest import SHIFTS, add_noise
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.training import E0Fit, HeadSettings, RunSettings
from mace_e0_plugin.glue import (MODES, HeadRequest, estimate_e0s, model_atomic_numbers, model_heads, read_e0s,
                                 shard)

N_CONFIGS = 37  # uneven over 2 and 3 ranks


def graphs(model, configs, head):
    from mace import data
    from mace.tools.utils import AtomicNumberTable

    z_table = AtomicNumberTable(model_atomic_numbers(model))
    heads = model_heads(model)
    keys = data.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return [data.AtomicData.from_config(data.config_from_atoms(a, key_specification=keys, head_name=head),
                                            z_table=z_table, cutoff=float(model.r_max), heads=heads)
                for a in configs]
    finally:
        torch.set_default_dtype(previous)


def request(model, dataset):
    return HeadRequest(name="Default", index=1, dataset=dataset, prior_e0s=read_e0s(model, 1))


def _estimate_worker(rank, world_size, folder):
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous",
                                         rank=rank, world_size=world_size)
    model = torch.load(folder / "foundation.model", weights_only=False)
    _, _, tuned = setup_from(folder, model)
    estimate = estimate_e0s(model, [request(model, tuned)], "cpu", batch_size=5, distributed=True, progress=False)
    solution = estimate.heads["Default"].solution
    torch.save({"e0s": solution.e0s, "n_configs": solution.n_configs}, folder / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def spawn(worker, world_size, folder, *args):
    for old in folder.glob("rank*.pt"):
        old.unlink()
    (folder / "rendezvous").unlink(missing_ok=True)
    mp.spawn(worker, args=(world_size, folder, *args), nprocs=world_size, join=True)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(world_size)]


def setup_from(folder, model):
    import ase.io

    replay = ase.io.read(folder / "replay.xyz", ":")
    tuned = ase.io.read(folder / "tuned.xyz", ":")
    return model, graphs(model, replay, "pt_head"), graphs(model, tuned, "Default")


@pytest.fixture(scope="module")
def shared_setup(tmp_path_factory):
    import ase.io

    folder = tmp_path_factory.mktemp("distributed")
    model = synthetic.build_foundation(synthetic.LEVEL_A.e0s, heads=("pt_head", "Default"), seed=3)
    replay = synthetic.label(synthetic.random_configs(11, seed=1), synthetic.LEVEL_A)
    tuned = synthetic.label(synthetic.random_configs(N_CONFIGS, seed=2), synthetic.LEVEL_B)
    synthetic.PlantedShift(SHIFTS).apply(model, tuned, head="Default")
    add_noise(tuned, seed=9)
    ase.io.write(folder / "replay.xyz", replay)
    ase.io.write(folder / "tuned.xyz", tuned)
    torch.save(model, folder / "foundation.model")
    return folder


@pytest.mark.slow  # spawned ranks, each importing torch and mace
@pytest.mark.parametrize("world_size", [2, 3])
def test_sharded_collection_equals_one_process(shared_setup, world_size):
    folder = shared_setup
    model = torch.load(folder / "foundation.model", weights_only=False)
    _, _, tuned = setup_from(folder, model)
    single = estimate_e0s(model, [request(model, tuned)], "cpu", batch_size=5, progress=False).heads["Default"].solution

    results = spawn(_estimate_worker, world_size, folder)

    assert all(r["e0s"] == results[0]["e0s"] for r in results)  # bit-identical on every rank
    assert all(r["n_configs"] == N_CONFIGS for r in results)  # each config counted exactly once
    assert results[0]["e0s"] == pytest.approx(single.e0s, abs=1e-8)
    # The test has power: one shard alone gives other E0s on these data.
    alone = estimate_e0s(model, [request(model, shard(tuned, 0, world_size))], "cpu", batch_size=5,
                         progress=False).heads["Default"].solution
    assert max(abs(a - b) for a, b in zip(alone.e0s, single.e0s)) > 1e-4
    expected = [synthetic.LEVEL_A.e0s[z] + SHIFTS[z] for z in (1, 6, 8)]
    assert single.e0s == pytest.approx(expected, abs=0.1)


def _hook_worker(rank, world_size, folder):
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-hook",
                                         rank=rank, world_size=world_size)
    model = torch.load(folder / "foundation.model", weights_only=False)
    _, replay, tuned = setup_from(folder, model)
    run_training_entry(model, replay, tuned, folder, rank, distributed=True)
    torch.distributed.destroy_process_group()


def run_training_entry(model, replay, tuned, folder, rank, distributed):
    """What mace's tools.train receives: a concatenation of every head's dataset, replay first,
    behind a shuffling loader; and an SWA copy of the model. The fit is driven by hand, with typed
    settings: no argparse."""
    from mace.tools import torch_geometric

    settings = RunSettings(
        heads={"Default": HeadSettings(energy_key="REF_energy", train_files=(str(folder / "tuned.xyz"),),
                                       refit=MODES["none"])},
        foundation=str(folder / "foundation.model"), foundation_head="pt_head", pass_dtype="float64",
        batch_size=4, results_dir=str(folder / f"results-{rank}"), name="ft")
    fit = E0Fit(settings)
    loader = torch_geometric.dataloader.DataLoader(ConcatDataset([replay, tuned]), batch_size=6,
                                                   shuffle=True, drop_last=True)
    swa_model = AveragedModel(model)
    fit.start(model, loader, "cpu", swa_model=swa_model, distributed=distributed, rank=rank)
    torch.save({"model": model.atomic_energies_fn.atomic_energies.clone(),
                "swa": swa_model.module.atomic_energies_fn.atomic_energies.clone()},
               folder / f"hook-rank{rank}.pt")


@pytest.mark.slow  # spawned ranks, each importing torch and mace
def test_training_entry_writes_every_copy_and_leaves_the_replay_head_alone(shared_setup):
    folder = shared_setup
    (folder / "rendezvous-hook").unlink(missing_ok=True)
    mp.spawn(_hook_worker, args=(2, folder), nprocs=2, join=True)
    written = [torch.load(folder / f"hook-rank{rank}.pt") for rank in range(2)]

    foundation_row = [synthetic.LEVEL_A.e0s[z] for z in (1, 6, 8)]
    model = torch.load(folder / "foundation.model", weights_only=False)
    _, _, tuned = setup_from(folder, model)
    expected = estimate_e0s(model, [request(model, tuned)], "cpu", batch_size=5,
                            progress=False).heads["Default"].solution.e0s
    for copies in written:
        for rows in copies.values():
            assert rows[0].tolist() == foundation_row  # pt_head untouched
            assert rows[1].tolist() == pytest.approx(expected, abs=1e-8)
    assert torch.equal(written[0]["model"], written[1]["model"])
    # Only rank 0 reports.
    report = json.loads((folder / "results-0" / "ft_E0s_linear_system.json").read_text())
    assert report["heads"]["Default"]["n_configs"] == N_CONFIGS
    assert not (folder / "results-1").exists()


@pytest.mark.slow  # spawned ranks, each importing torch and mace
def test_torchrun_shards_the_mace_e0_command(shared_setup, tmp_path):
    import shutil

    from conftest import run_command

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    folder = shared_setup
    single, sharded = tmp_path / "single.json", tmp_path / "sharded.json"
    common = ["estimate", str(folder / "foundation.model"), str(folder / "tuned.xyz"), "--energy-key", "REF_energy",
              "--head", "Default", "--device", "cpu", "--batch-size", "4"]
    assert run_command(["mace-e0", *common, "--output", str(single)], cwd=tmp_path).returncode == 0
    result = run_command(["torchrun", "--standalone", "--nproc_per_node=3", "--no-python", "mace-e0", *common,
                          "--output", str(sharded)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("E0 re-estimation for head 'Default'") == 1  # rank 0 reports
    one, three = (json.loads(p.read_text())["heads"]["Default"] for p in (single, sharded))
    assert one["n_configs"] == three["n_configs"] == N_CONFIGS
    for z in one["E0s"]:
        assert three["E0s"][z] == pytest.approx(one["E0s"][z], abs=1e-8)


def _decision_worker(rank, world_size, folder):
    from mace.tools import CheckpointHandler

    from mace_e0_plugin.glue import agree
    from mace_e0_plugin.training._mace_run import checkpoint_files, latest_checkpoint

    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-decide",
                                         rank=rank, world_size=world_size)
    # Each rank's own view of the files differs: rank 0 sees two checkpoints, rank 1 none (a lagging
    # network file system, say). Left to itself, rank 1 would skip the collectives rank 0 enters.
    handler = CheckpointHandler(directory=str(folder / f"view-{rank}"), tag="ft")
    if rank == 0:
        for epoch in (0, 3):
            handler.io.save({"model": {}, "optimizer": {}, "lr_scheduler": {}}, epochs=epoch)
    own = (bool(checkpoint_files(handler.io)), latest_checkpoint(handler.io, swa=False))
    shared = (agree(bool(checkpoint_files(handler.io))), agree(latest_checkpoint(handler.io, swa=False)))
    torch.save({"own": own, "shared": shared}, folder / f"decide-{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # spawned ranks, each importing torch and mace
def test_decisions_every_rank_must_share_are_rank_zeros(tmp_path):
    mp.spawn(_decision_worker, args=(2, tmp_path), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"decide-{rank}.pt", weights_only=False) for rank in (0, 1))
    assert zero["own"] != one["own"] and one["own"] == (False, None)  # the views differ...
    assert zero["shared"] == one["shared"] == zero["own"]  # ...the decisions do not
    restored, (path, epoch) = zero["shared"]
    assert restored is True and epoch == 3 and path.startswith(str(tmp_path / "view-0"))
