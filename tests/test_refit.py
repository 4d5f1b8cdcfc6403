"""--E0s_refit: E0s re-solved at every epoch's end from the training batches' own predictions, and
after training for each checkpoint mace reloads, so that every saved model carries the optimum
for its own weights."""

import ase.io
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import ConcatDataset

from conftest import SHIFTS, add_noise, finetune_argv, mace_train, planted_configs, report, saved_e0s, write_xyz
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.glue import (EPOCH, FINAL, HeadRequest, element_counts, estimate_e0s,
                                 read_e0s)
from mace_e0_plugin.io import save_torch
from mace_e0_plugin.training._refitter import Refitter
from test_distributed import graphs

N_TUNED, N_REPLAY = 23, 9


# -- the epoch refit, on its own ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """A pt_head + Default foundation, replay data at level A and planted, noisy Default data."""
    model = synthetic.build_foundation(synthetic.LEVEL_A.e0s, heads=("pt_head", "Default"), seed=5)
    replay = synthetic.label(synthetic.random_configs(N_REPLAY, seed=21), synthetic.LEVEL_A)
    tuned = synthetic.label(synthetic.random_configs(N_TUNED, seed=22), synthetic.LEVEL_B)
    synthetic.PlantedShift(SHIFTS).apply(model, tuned, head="Default")
    add_noise(tuned, seed=23)  # so that a refit that missed a rank's batches would differ
    folder = tmp_path_factory.mktemp("refit")
    torch.save(model, folder / "foundation.model")
    ase.io.write(folder / "replay.xyz", replay)
    ase.io.write(folder / "tuned.xyz", tuned)
    return folder


def load_two_heads(folder):
    model = torch.load(folder / "foundation.model", weights_only=False)
    replay = graphs(model, ase.io.read(folder / "replay.xyz", ":"), "pt_head")
    tuned = graphs(model, ase.io.read(folder / "tuned.xyz", ":"), "Default")
    return model, replay, tuned


def loss_module():
    from mace import modules

    return modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=10.0)


def fixed_batches(replay, tuned, batch_size=5):
    """Mixed-head batches in a fixed order, as mace's shuffled training loader would give them."""
    from mace.tools import torch_geometric

    order = torch.randperm(N_REPLAY + N_TUNED, generator=torch.Generator().manual_seed(0)).tolist()
    dataset = ConcatDataset([replay, tuned])
    return list(torch_geometric.dataloader.DataLoader([dataset[i] for i in order], batch_size=batch_size))


def default_request(model, tuned):
    return HeadRequest(name="Default", index=1, dataset=tuned, prior_e0s=read_e0s(model, 1))


def train_on(model, batches, loss_fn, optimizer=None):
    """Training steps as mace takes them; returns what each Default config looked like to the loss:
    (element counts, E_ref - E_pred) under the E0s of this epoch."""
    seen = []
    for batch in batches:
        output = model(batch.to_dict(), training=True, compute_force=True)
        loss = loss_fn(pred=output, ref=batch)
        mine = batch.head == 1
        seen += zip(element_counts(batch)[mine].tolist(), (batch.energy - output["energy"]).detach()[mine].tolist())
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return seen


def closed_form(e0s, seen):
    """The per_atom fit of the E0 corrections, dense and independent: lstsq on sqrt(w) A x = sqrt(w) b."""
    counts = np.array([c for c, _ in seen])
    residuals = np.array([r for _, r in seen])
    scale = 1.0 / counts.sum(axis=1)
    correction = np.linalg.lstsq(counts * scale[:, None], residuals * scale, rcond=None)[0]
    return np.array(e0s) + correction


def test_epoch_refit_is_the_closed_form_solution_of_the_epochs_own_predictions(two_heads):
    model, replay, tuned = load_two_heads(two_heads)
    loss_fn = loss_module()
    refitter = Refitter([default_request(model, tuned)], {"Default": frozenset({EPOCH})}, model, [model],
                        "cpu", batch_size=4)
    refitter.attach(loss_fn)
    start = model.atomic_energies_fn.atomic_energies.clone()

    refitter.epoch_start()
    seen = train_on(model, fixed_batches(replay, tuned), loss_fn, torch.optim.Adam(model.parameters(), lr=1e-2))
    (refit,) = refitter.epoch_end(epoch=0)

    assert refit.head == "Default" and refit.kind == EPOCH and refit.epoch == 0
    assert refit.solution.n_configs == N_TUNED  # every Default config once, no replay config
    expected = closed_form(start[1].tolist(), seen)
    assert refit.solution.e0s == pytest.approx(expected.tolist(), abs=1e-8)
    rows = model.atomic_energies_fn.atomic_energies
    assert rows[1].tolist() == refit.solution.e0s  # written into the model
    assert torch.equal(rows[0], start[0])  # pt_head untouched

    # Validation after the epoch's end calls the loss too: it is not counted.
    before = refitter.systems["Default"].flat().clone()
    train_on(model, fixed_batches(replay, tuned), loss_fn)
    assert torch.equal(refitter.systems["Default"].flat(), before)
    refitter.detach()
    assert not loss_fn._forward_hooks


def in_float32(items):
    """Graphs as a float32 fine-tune holds them (mace's batches are in the default dtype)."""
    for item in items:
        for key, value in item:
            if torch.is_tensor(value) and value.is_floating_point():
                setattr(item, key, value.float())
    return items


def test_a_float32_fine_tunes_epoch_refit_is_the_float64_closed_form_of_its_predictions(two_heads):
    model, replay, tuned = load_two_heads(two_heads)
    model, replay, tuned = model.float(), in_float32(replay), in_float32(tuned)
    loss_fn = loss_module()
    refitter = Refitter([default_request(model, tuned)], {"Default": frozenset({EPOCH})}, model, [model],
                        "cpu", batch_size=4)
    refitter.attach(loss_fn)
    e0s = model.atomic_energies_fn.atomic_energies.detach().double()
    refitter.epoch_start()
    exact, rounded = [], []  # per Default config: its residual in float64, and in float32 arithmetic
    for batch in fixed_batches(replay, tuned):
        output = model(batch.to_dict(), training=True, compute_force=True)
        loss_fn(pred=output, ref=batch)
        counts = element_counts(batch).double()
        mine = batch.head == 1
        in_64 = batch.energy.double() - counts @ e0s[1] - output["interaction_energy"].detach().double()
        in_32 = (batch.energy - output["energy"].detach()).double()
        exact += zip(counts[mine].tolist(), in_64[mine].tolist())
        rounded += zip(counts[mine].tolist(), in_32[mine].tolist())
    (refit,) = refitter.epoch_end(epoch=0)
    expected = closed_form(e0s[1].tolist(), exact)
    assert refit.solution.e0s == pytest.approx(expected.tolist(), abs=1e-9)
    # Totals of ~-1e4 eV in float32 keep ~1e-3 eV: a refit from float32 residuals would be off.
    assert np.abs(closed_form(e0s[1].tolist(), rounded) - expected).max() > 1e-6


def test_an_optimizer_that_revisits_the_data_refits_from_one_pass(two_heads):
    # LBFGS calls the loss over the whole set many times per step: statistics come from a pass.
    model, replay, tuned = load_two_heads(two_heads)
    loss_fn = loss_module()
    refitter = Refitter([default_request(model, tuned)], {"Default": frozenset({EPOCH})}, model, [model],
                        "cpu", batch_size=4, one_pass_per_epoch=False)
    refitter.attach(loss_fn)
    refitter.epoch_start()
    for _ in range(3):
        train_on(model, fixed_batches(replay, tuned), loss_fn)
    # One pass over the Default data, each config once, whatever the loss saw.
    expected = estimate_e0s(model, [default_request(model, tuned)], "cpu", batch_size=4,
                            progress=False).heads["Default"].solution.e0s
    (refit,) = refitter.epoch_end(epoch=0)

    assert not loss_fn._forward_hooks
    assert refit.solution.n_configs == N_TUNED
    assert refit.solution.e0s == pytest.approx(expected, abs=1e-10)


# -- two processes (gloo) ---------------------------------------------------------------------------
def _refit_worker(rank, world_size, folder):
    from mace.tools import CheckpointHandler

    if world_size > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous",
                                             rank=rank, world_size=world_size)
    model, replay, tuned = load_two_heads(folder)
    loss_fn = loss_module()
    refitter = Refitter([default_request(model, tuned)], {"Default": frozenset({EPOCH, FINAL})}, model, [model],
                        "cpu", batch_size=4, distributed=world_size > 1, rank=rank, save=save_torch)
    refitter.attach(loss_fn)
    refitter.epoch_start()
    # This rank's share; as many batches on each, as mace's loss all-reduces at every call under DDP.
    train_on(model, fixed_batches(replay, tuned, batch_size=4)[rank::world_size], loss_fn)
    (epoch_refit,) = refitter.epoch_end(epoch=0)

    handler = CheckpointHandler(directory=str(folder / f"checkpoints-{world_size}"), tag="ft")
    if rank == 0:
        state = {"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}}
        state["model"]["atomic_energies_fn.atomic_energies"][1] += 0.25  # off by 0.25 eV per atom
        handler.io.save(state, epochs=0)
    if world_size > 1:
        torch.distributed.barrier()
    (final_refit,) = refitter.final(handler.io, stage_two=False)
    written = torch.load(handler.io._get_latest_checkpoint_path(swa=False), weights_only=False)
    torch.save({"epoch": epoch_refit.solution.e0s, "final": final_refit.solution.e0s,
                "file": written["model"]["atomic_energies_fn.atomic_energies"].tolist(),
                "n_configs": final_refit.solution.n_configs},
               folder / f"refit-{world_size}-{rank}.pt")
    if world_size > 1:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned ranks: fresh interpreters that import torch and mace (~11 s of CPU)
def test_two_gloo_processes_refit_as_one(two_heads):
    folder = two_heads
    _refit_worker(0, 1, folder)
    (folder / "rendezvous").unlink(missing_ok=True)
    mp.spawn(_refit_worker, args=(2, folder), nprocs=2, join=True)
    one, *two = [torch.load(folder / name) for name in ("refit-1-0.pt", "refit-2-0.pt", "refit-2-1.pt")]

    assert two[0] == two[1]  # bit-identical on both ranks
    assert two[0]["epoch"] == pytest.approx(one["epoch"], abs=1e-9)
    assert two[0]["final"] == pytest.approx(one["final"], abs=1e-9)
    assert two[0]["file"][1] == pytest.approx(one["file"][1], abs=1e-9)
    assert two[0]["file"][0] == one["file"][0] == [synthetic.LEVEL_A.e0s[z] for z in (1, 6, 8)]  # pt_head
    assert one["n_configs"] == two[0]["n_configs"] == N_TUNED
    # The checkpoint's 0.25 eV offset is gone: the file holds the fit of its own weights.
    assert one["file"][1] == pytest.approx(one["final"], abs=1e-12)
    assert one["final"] == pytest.approx(one["epoch"], abs=1e-6)


# -- mace_run_train end to end --------------------------------------------------------------------
def own_optimum(path, train_file, index=0, head="Default"):
    """The E0s a fresh estimate gives for a saved model's own weights on the training file."""
    from mace_e0_plugin.glue import load_data

    model = torch.load(path, map_location="cpu", weights_only=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = load_data([str(train_file)], model, head, "REF_energy")
        request = HeadRequest(name=head, index=index, dataset=data.dataset, prior_e0s=read_e0s(model, index))
        return estimate_e0s(model, [request], "cpu", batch_size=16, progress=False).heads[head].solution
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.slow
def test_every_saved_model_carries_the_refit_of_its_own_weights_with_ema_and_stage_two(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 24, seed=31))
    valid = write_xyz(tmp_path / "valid.xyz", planted_configs(foundation, 6, seed=32))
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, train, work, "--valid_file", str(valid), "--E0s_refit", "epoch+final",
                             "--ema", "--ema_decay", "0.9", "--swa", "--start_swa", "1", "--max_num_epochs", "2",
                             "--lr", "0.02", "--plot", "False"))

    content = report(work)
    kinds = [(r["kind"], r["epoch"], r["checkpoint"]) for r in content["refits"]]
    assert kinds == [(EPOCH, 0, None), (EPOCH, 1, None), (FINAL, 0, "ft_run-1_epoch-0.pt"),
                     (FINAL, 1, "ft_run-1_epoch-1_swa.pt")]
    final = {r["checkpoint"]: [r["E0s"][z] for z in ("1", "6", "8")] for r in content["refits"] if r["kind"] == FINAL}
    for saved, checkpoint in (("ft.model", "ft_run-1_epoch-0.pt"), ("ft_stagetwo.model", "ft_run-1_epoch-1_swa.pt")):
        e0s = saved_e0s(work / saved)[0]
        assert e0s.tolist() == final[checkpoint]
        compiled = torch.jit.load(str(work / saved.replace(".model", "_compiled.model")))
        assert compiled.atomic_energies_fn.atomic_energies[0].double().tolist() == final[checkpoint]
        state = torch.load(work / "checkpoints" / checkpoint, weights_only=False)["model"]
        assert state["atomic_energies_fn.atomic_energies"][0].double().tolist() == final[checkpoint]
        # Optimal for the saved weights (EMA-averaged, stage one or two): nothing left to correct.
        assert max(abs(c) for c in own_optimum(work / saved, train).corrections) < 1e-8
    assert final["ft_run-1_epoch-0.pt"] != final["ft_run-1_epoch-1_swa.pt"]
    # The report's E0s are those of the last model mace saves, the stage-two one.
    head = content["heads"]["Default"]
    assert [head["E0s"][z] for z in ("1", "6", "8")] == final["ft_run-1_epoch-1_swa.pt"]
    assert head["corrections"]["1"] == pytest.approx(head["E0s"]["1"] - head["starting_E0s"]["1"], abs=1e-12)
    assert head["estimated_E0s"]["1"] == pytest.approx(foundation.e0s[1] + SHIFTS[1], abs=1e-6)


@pytest.mark.slow
def test_none_keeps_the_first_estimate_bit_for_bit_and_watches_nothing(foundation, planted_train, tmp_path):
    import importlib

    training = importlib.import_module("mace.tools.train")
    original = training.train_one_epoch
    watchers = []

    def spy(*args, **kwargs):  # what the loss module carries during each epoch
        watchers.append(len(kwargs["loss_fn"]._forward_hooks))
        return original(*args, **kwargs)

    training.train_one_epoch = spy
    try:
        mace_train(finetune_argv(foundation, planted_train, tmp_path / "run", "--E0s_refit", "none",
                                 "--max_num_epochs", "2", "--lr", "0.02"))
    finally:
        training.train_one_epoch = original

    content = report(tmp_path / "run")
    assert "refits" not in content and watchers == [0, 0]
    estimate = [content["heads"]["Default"]["E0s"][z] for z in ("1", "6", "8")]
    assert saved_e0s(tmp_path / "run" / "ft.model")[0].tolist() == estimate


@pytest.mark.slow
def test_lbfgs_refits_each_epoch_from_one_pass(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 10, seed=33))
    valid = write_xyz(tmp_path / "valid.xyz", planted_configs(foundation, 3, seed=34))
    mace_train(finetune_argv(foundation, train, tmp_path / "run", "--valid_file", str(valid), "--lbfgs",
                             "--E0s_refit", "epoch", "--plot", "False"))
    (refit,) = report(tmp_path / "run")["refits"]
    assert refit["kind"] == EPOCH and refit["n_configs"] == 10  # one pass, not one per LBFGS evaluation
    # Only epoch refits: the saved model keeps the epoch's E0s.
    assert saved_e0s(tmp_path / "run" / "ft.model")[0].tolist() == [refit["E0s"][z] for z in ("1", "6", "8")]


@pytest.mark.slow
def test_multihead_refits_the_fine_tuning_head_and_never_pt_head(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 12, seed=35))
    replay = synthetic.label(synthetic.random_configs(60, seed=36), synthetic.LEVEL_A)
    write_xyz(tmp_path / "replay.xyz", replay)
    argv = finetune_argv(foundation, train, tmp_path / "run", "--multiheads_finetuning", "True",
                         "--pt_train_file", str(tmp_path / "replay.xyz"), "--force_mh_ft_lr", "True",
                         "--E0s_refit", "epoch+final", "--lr", "0.02", "--plot", "False")
    mace_train(argv)

    rows = saved_e0s(tmp_path / "run" / "ft.model")
    assert rows[0].tolist() == [foundation.e0s[z] for z in (1, 6, 8)]
    content = report(tmp_path / "run")
    assert {r["head"] for r in content["refits"]} == {"Default"}
    final = [r for r in content["refits"] if r["kind"] == FINAL][-1]
    assert rows[1].tolist() == [final["E0s"][z] for z in ("1", "6", "8")]


@pytest.mark.slow
def test_restart_keeps_the_checkpoints_e0s_and_refits_go_on(foundation, tmp_path):
    train = write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 20, seed=37))
    valid = write_xyz(tmp_path / "valid.xyz", planted_configs(foundation, 4, seed=38))
    work = tmp_path / "run"
    common = ["--valid_file", str(valid), "--E0s_refit", "epoch", "--lr", "0.02", "--plot", "False"]
    mace_train(finetune_argv(foundation, train, work, *common))
    first = report(work)
    checkpoint_e0s = saved_e0s(work / "ft.model")[0].tolist()

    # Shift the data: a fresh estimate would move every E0 by 0.5 eV; the restart must not make one.
    configs = ase.io.read(train, ":")
    for atoms in configs:
        atoms.info["REF_energy"] += 0.5 * len(atoms)
    write_xyz(train, configs)
    mace_train(finetune_argv(foundation, train, work, *common, "--restart_latest", "--max_num_epochs", "2"))

    second = report(work)
    unchanged = ("estimated_E0s", "starting_E0s", "rmse_per_atom_before_meV", "n_configs")
    assert {k: second["heads"]["Default"][k] for k in unchanged} == {k: first["heads"]["Default"][k] for k in unchanged}
    epochs = [r["epoch"] for r in second["refits"]]
    assert epochs == [0, 0, 1]  # the first run's refit kept; mace 0.3.16 restarts at the checkpoint's epoch
    assert second["refits"][0] == first["refits"][0]
    # The restart's first refit started from the checkpoint's E0s: it moved them by about the 0.5 eV shift.
    moved = [second["refits"][1]["E0s"][z] - e for z, e in zip(("1", "6", "8"), checkpoint_e0s)]
    assert moved == pytest.approx([0.5, 0.5, 0.5], abs=0.15)


def test_a_checkpoint_that_does_not_fit_the_model_is_one_error_and_is_left_as_it_was(two_heads, tmp_path):
    from pathlib import Path

    from mace.tools import CheckpointHandler

    from mace_e0_plugin.errors import E0ModelError
    from mace_e0_plugin.training._refitter import RefitFailed

    model, _, tuned = load_two_heads(two_heads)
    refitter = Refitter([default_request(model, tuned)], {"Default": frozenset({FINAL})}, model, [model], "cpu",
                        batch_size=4, save=save_torch)
    handler = CheckpointHandler(directory=str(tmp_path / "checkpoints"), tag="ft")
    state = {"model": dict(model.state_dict()), "optimizer": {}, "lr_scheduler": {}}
    state["model"]["readout_extra.weight"] = torch.zeros(2)  # another network's key
    handler.io.save(state, epochs=0)
    path = Path(handler.io._get_latest_checkpoint_path(swa=False))
    before = path.read_bytes()
    with pytest.raises(RefitFailed) as failed:
        refitter.final(handler.io, stage_two=False)
    assert (failed.value.kind, failed.value.epoch, failed.value.checkpoint) == (FINAL, 0, path.name)
    cause = failed.value.__cause__  # the one line the training door logs
    assert isinstance(cause, E0ModelError)
    assert str(path) in str(cause) and "keys do not match" in str(cause) and "\n" not in str(cause)
    assert path.read_bytes() == before  # no refit of other weights, and nothing written
