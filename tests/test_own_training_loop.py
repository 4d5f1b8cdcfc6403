"""``E0Fit`` around a loop of one's own (examples/own_training_loop.py) gives mace_run_train's E0s on
the same data: the first estimate, from the foundation; and the final refit, from the network
mace trained. The example has no argparse: the fit is built from typed settings."""

import importlib.util
import json

import pytest
import torch

from conftest import PROJECT, finetune_argv, mace_train, planted_configs, report, saved_e0s, write_xyz
from mace_e0_plugin.glue import default_dtype

EXAMPLE = PROJECT / "examples" / "own_training_loop.py"
SAME_SUMS = 1e-9  # eV: the same float64 sums, in another batch order
PER_ATOM_SHIFT = 0.05  # eV per atom added to the network's energies between the first estimate and the refit


def example():
    spec = importlib.util.spec_from_file_location("own_training_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mace_run(foundation, tmp_path_factory):
    """mace_run_train on the whole training file (validation from another), with the final refit."""
    folder = tmp_path_factory.mktemp("mace_run")
    train = write_xyz(folder / "train.xyz", planted_configs(foundation, 32, seed=21))
    valid = write_xyz(folder / "valid.xyz", planted_configs(foundation, 8, seed=22))
    mace_train(finetune_argv(foundation, train, folder, "--valid_file", str(valid), "--E0s_refit", "final",
                             "--max_num_epochs", "2", "--lr", "0.02"))
    return folder, train


def e0_row(model):
    return model.atomic_energies_fn.atomic_energies.detach().double()[0]


def test_the_example_has_no_argparse():
    assert "argparse" not in EXAMPLE.read_text()


@pytest.mark.slow
def test_the_first_estimate_and_the_final_refit_are_mace_run_trains(foundation, mace_run, tmp_path):
    folder, train = mace_run
    entry = report(folder)["heads"]["Default"]
    first_estimate = torch.tensor([entry["estimated_E0s"][str(z)] for z in sorted(foundation.e0s)], dtype=torch.float64)
    saved = saved_e0s(folder / "ft.model")[0]
    assert (saved - first_estimate).abs().max() > 1e-4  # training moved them: the two checks differ

    own_loop = example()
    with default_dtype(torch.float64):  # mace's --default_dtype=float64, as the run above
        model = torch.load(foundation.path, weights_only=False)
        fit = own_loop.fit_for(foundation.path, train, tmp_path)
        loader = own_loop.torch_geometric.dataloader.DataLoader(own_loop.graphs(model, train), batch_size=8)
        assert fit.start(model, loader, "cpu") is True  # a final refit is still to come
        assert e0_row(model).tolist() == pytest.approx(first_estimate.tolist(), abs=SAME_SUMS)

        # The loop ends with mace's trained network (its weights, not its refitted E0s): the final
        # refit gives the E0s mace saved.
        trained = torch.load(folder / "ft.model", weights_only=False).state_dict()
        trained["atomic_energies_fn.atomic_energies"] = model.atomic_energies_fn.atomic_energies.clone()
        model.load_state_dict(trained, strict=True)
        fit.finish()
    assert e0_row(model).tolist() == pytest.approx(saved.tolist(), abs=SAME_SUMS)
    written = json.loads((tmp_path / "results" / "own_loop_E0s_linear_system.json").read_text())
    assert [refit["kind"] for refit in written["refits"]] == ["final"]
    assert written["heads"]["Default"]["E0s"] == pytest.approx(
        {str(z): e for z, e in zip(sorted(foundation.e0s), saved.tolist())}, abs=SAME_SUMS)


@pytest.mark.slow
def test_the_example_runs_end_to_end(foundation, planted_train, tmp_path):
    own_loop = example()
    with default_dtype(torch.float64):
        model, fit = own_loop.fine_tune(foundation.path, planted_train, tmp_path, epochs=1)
    saved = torch.load(tmp_path / "own_loop.model", weights_only=False)
    assert torch.equal(e0_row(saved), e0_row(model))
    assert [refit.kind for refit in fit.refitter.refits] == ["final"]
    assert e0_row(saved).tolist() == fit.refitter.saved_e0s["Default"]


def test_an_epoch_refit_alone_reports_the_e0s_of_the_model_the_loop_saves(foundation, planted_train, tmp_path):
    """No final refit and no checkpoints: the report's E0s are those the last epoch refit left in the
    model, not the first estimate's."""
    own_loop = example()
    with default_dtype(torch.float64):
        model = torch.load(foundation.path, weights_only=False)
        loader = own_loop.torch_geometric.dataloader.DataLoader(own_loop.graphs(model, planted_train), batch_size=8)
        head = own_loop.HeadSettings(energy_key="REF_energy", train_files=(str(planted_train),), refit=frozenset({"epoch"}))
        fit = own_loop.E0Fit(own_loop.RunSettings(heads={"Default": head}, foundation=str(foundation.path),
                                                  pass_dtype="float64", results_dir=str(tmp_path), name="epochs"))
        loss_fn = own_loop.modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=10.0)
        fit.start(model, loader, "cpu", loss_fn=loss_fn)
        first = e0_row(model).clone()
        model.scale_shift.shift.add_(PER_ATOM_SHIFT)  # the network's energies moved: the refit takes it off the E0s
        fit.epoch_start(0)
        for batch in loader:
            loss_fn(pred=model(batch.to_dict(), training=True, compute_force=True), ref=batch)
        fit.epoch_end(0)
        fit.finish()
    assert (e0_row(model) - (first - PER_ATOM_SHIFT)).abs().max() < 1e-6  # every E0 took the shift off
    written = json.loads((tmp_path / "epochs_E0s_linear_system.json").read_text())["heads"]["Default"]
    reported = [written["E0s"][str(z)] for z in sorted(foundation.e0s)]
    estimated = [written["estimated_E0s"][str(z)] for z in sorted(foundation.e0s)]
    assert reported == pytest.approx(e0_row(model).tolist(), abs=1e-12)  # the JSON's digits
    assert estimated == pytest.approx(first.tolist(), abs=1e-12)
    assert max(abs(a - b) for a, b in zip(reported, estimated)) > PER_ATOM_SHIFT / 2  # not the first estimate
