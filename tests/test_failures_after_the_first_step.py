"""A plugin lives inside someone else's run: after the first training step nothing of ours stops
mace. A fault injected into the final refit (as a CUDA out-of-memory error would be), into an epoch
refit inside mace's training step, or into the last report, leaves mace's saved model, with the
E0s of the last estimate or refit that succeeded; one ERROR line says what failed, why, what was
kept and how to refit later, and the report and the provenance record it."""

import errno
import os
import shlex

import ase.io
import pytest
import torch

from conftest import closed_form_e0s, expected_e0s, finetune_argv, mace_train, report, saved_e0s
from mace_e0_plugin.doors import main as mace_e0
from mace_e0_plugin.glue import read_provenance
from mace_e0_plugin.io import format_provenance

pytestmark = pytest.mark.slow

OUT_OF_MEMORY = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total capacity)"


def errors_of_ours(work):
    """mace's log lines at ERROR that come from the plugin."""
    log = next((work / "logs").glob("*.log")).read_text()
    return [line for line in log.splitlines() if "ERROR" in line and "mace-e0-plugin" in line]


def out_of_memory(*_args, **_kwargs):
    raise torch.OutOfMemoryError(OUT_OF_MEMORY)


def test_a_final_refit_that_runs_out_of_memory_keeps_the_saved_model_and_says_how_to_refit(
        foundation, planted_train, tmp_path, monkeypatch):
    from mace_e0_plugin.training import _refitter as _refit

    work = tmp_path / "run"
    monkeypatch.setattr(_refit, "estimate_e0s", out_of_memory)  # the final refit's pass only
    mace_train(finetune_argv(foundation, planted_train, work, "--E0s_refit", "final"))  # returns: mace's run ended

    # mace saved and evaluated its model, with the first estimate's E0s (the planted shifts).
    saved = saved_e0s(work / "ft.model")[0]
    assert torch.allclose(saved, expected_e0s(foundation), atol=1e-6, rtol=0)
    assert (work / "ft_compiled.model").exists()
    assert "Error-table on TRAIN and VALID" in next((work / "logs").glob("*.log")).read_text()

    (line,) = errors_of_ours(work)
    checkpoint = next((work / "checkpoints").glob("ft_run-1_epoch-*.pt")).name
    assert (f"the final E0 refit of checkpoint {checkpoint} (head 'Default') failed: OutOfMemoryError: "
            f"{OUT_OF_MEMORY}; kept: that checkpoint as it was, with the E0s it was saved with "
            "(the first estimate)") in line
    commands = line.split("To refit the saved model later: ")[1].split(" && ")
    assert [shlex.split(c)[:2] for c in commands] == [["mace-e0", "estimate"], ["mace-e0", "apply"]]

    content = report(work)
    (failure,) = content["failures"]
    assert failure["heads"] == ["Default"] and failure["refit_later"] == commands
    assert content["refits"] == []
    assert content["heads"]["Default"]["E0s"] == pytest.approx(
        {str(z): e for z, e in zip((1, 6, 8), saved.tolist())}, abs=1e-12)
    provenance = read_provenance(torch.load(work / "ft.model", weights_only=False))["Default"]
    assert provenance["refit_failed"].startswith(f"the final E0 refit of checkpoint {checkpoint}")
    assert "NOT refitted after training" in format_provenance(provenance)

    # The commands in the line are the refit: run as they are, they give the saved network's optimum.
    monkeypatch.undo()
    for command in commands:
        assert mace_e0(shlex.split(command)[1:]) == 0
    refitted = torch.load(work / "ft_refit.model", weights_only=False)
    configs = ase.io.read(planted_train, ":")
    optimum = closed_form_e0s(torch.load(work / "ft.model", weights_only=False), configs, "per_atom")
    assert refitted.atomic_energies_fn.atomic_energies[0].tolist() == pytest.approx(
        [optimum[z] for z in (1, 6, 8)], abs=1e-4)  # mace-e0's default float32 pass


def test_an_epoch_refit_that_fails_inside_the_training_step_keeps_the_last_refit(
        foundation, planted_train, tmp_path, monkeypatch):
    from mace_e0_plugin.training import _refitter as _refit

    collect, calls = _refit.Refitter._collect, []

    def fails_in_the_second_epoch(self, pred, ref):
        calls.append(self._first_batch)
        if sum(calls) == 2 and self._first_batch:  # the first batch of the second epoch
            raise RuntimeError("a fault in the plugin's loss hook")
        return collect(self, pred, ref)

    monkeypatch.setattr(_refit.Refitter, "_collect", fails_in_the_second_epoch)
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, planted_train, work, "--E0s_refit", "epoch+final", "--max_num_epochs", "3"))

    (line,) = errors_of_ours(work)
    assert ("the E0 refit at the end of epoch 1 (head 'Default') failed: RuntimeError: a fault in the plugin's "
            "loss hook; kept: the E0s of the epoch-0 refit in the model; no further E0 refits in this run") in line
    content = report(work)
    assert [(r["kind"], r["epoch"]) for r in content["refits"]] == [("epoch", 0)]  # no more, no final refit
    # mace trained epochs 1 and 2 and saved its model, with the epoch-0 refit's E0s.
    epoch0 = [content["refits"][0]["E0s"][z] for z in ("1", "6", "8")]
    assert saved_e0s(work / "ft.model")[0].tolist() == epoch0
    assert sorted(p.name for p in (work / "checkpoints").glob("*.pt"))[-1].endswith("epoch-2.pt")
    provenance = read_provenance(torch.load(work / "ft.model", weights_only=False))["Default"]
    assert provenance["n_refits"] == 1 and "epoch 1" in provenance["refit_failed"]


def test_a_report_that_cannot_be_written_at_the_end_costs_nothing_else(foundation, planted_train, tmp_path,
                                                                      monkeypatch):
    from mace_e0_plugin.io import _outputs

    write_json, calls = _outputs.write_json, []

    def disk_full_after_the_first_report(path, content):
        calls.append(path)
        if len(calls) > 1:
            from mace_e0_plugin.io import write_error

            raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return write_json(path, content)

    monkeypatch.setattr(_outputs, "write_json", disk_full_after_the_first_report)
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, planted_train, work, "--E0s_refit", "final", "--max_num_epochs", "2"))

    (line,) = errors_of_ours(work)
    path = work / "results" / "ft_E0s_linear_system.json"
    assert f"writing the report {path} failed: E0WriteError: cannot write {path}: no space left on device" in line
    first = report(work)  # the first estimate's report, whole
    assert "refits" not in first
    # The final refit was made and saved: the model's E0s moved from the first estimate.
    model = torch.load(work / "ft.model", weights_only=False)
    assert model.atomic_energies_fn.atomic_energies[0].tolist() != [first["heads"]["Default"]["E0s"][z]
                                                                    for z in ("1", "6", "8")]
    assert read_provenance(model)["Default"]["n_refits"] == 1
