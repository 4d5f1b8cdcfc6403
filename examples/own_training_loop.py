"""Fine-tune a MACE model in a plain PyTorch loop of your own, with the E0s fitted by ``E0Fit``
as ``mace_run_train --E0s=linear_system`` fits them: the first estimate before the first step, the
final refit after the last epoch (and ``epoch`` refits from the loop's own loss calls, if asked).

    python examples/own_training_loop.py [OUT_DIR [FOUNDATION.model TRAIN.xyz]]

With no model and data given, it builds the toy foundation and the toy level-B data (nothing
downloaded). The data's energies are ``REF_energy``, forces ``REF_forces``.
"""

import logging
import sys
import warnings
from pathlib import Path

import ase.io
import torch
from mace import data, modules
from mace.tools import AtomicNumberTable, torch_geometric

from mace_e0_plugin import testing as toy
from mace_e0_plugin.training import E0Fit, HeadSettings, RunSettings

KEYS = data.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})


def graphs(model, train_file):
    """The training configs as mace's graphs, for ``model``'s elements, cutoff and heads."""
    z_table = AtomicNumberTable(model.atomic_numbers.tolist())
    configs = [data.config_from_atoms(atoms, key_specification=KEYS, head_name="Default")
               for atoms in ase.io.read(train_file, ":")]
    return [data.AtomicData.from_config(c, z_table=z_table, cutoff=float(model.r_max), heads=model.heads)
            for c in configs]


def fit_for(foundation, train_file, out_dir) -> E0Fit:
    """The E0 fit of this run: one head, the foundation's E0s as the prior, the final refit."""
    head = HeadSettings(energy_key="REF_energy", train_files=(str(train_file),), refit=frozenset({"final"}))
    return E0Fit(RunSettings(heads={"Default": head}, foundation=str(foundation), pass_dtype="float64",
                             results_dir=str(out_dir / "results"), name="own_loop", model_dir=str(out_dir)))


def fine_tune(foundation, train_file, out_dir: Path, epochs: int = 3):
    """Fine-tune ``foundation`` on ``train_file``: returns (the trained model, its fit)."""
    model = torch.load(foundation, weights_only=False)  # the model to train starts as the foundation
    loader = torch_geometric.dataloader.DataLoader(graphs(model, train_file), batch_size=8, shuffle=True)
    loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=10.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit = fit_for(foundation, train_file, out_dir)
    fit.start(model, loader, "cpu", loss_fn=loss_fn, optimizer=optimizer)  # the first estimate
    for epoch in range(epochs):
        fit.epoch_start(epoch)
        losses = []
        for batch in loader:
            optimizer.zero_grad()
            output = model(batch.to_dict(), training=True, compute_force=True)
            loss = loss_fn(pred=output, ref=batch)  # by name: an epoch refit reads pred and ref
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        fit.epoch_end(epoch)
        print(f"epoch {epoch}: mean training loss {sum(losses) / len(losses):.4f}")
    fit.finish()  # the final refit: the E0s of the network to be saved
    torch.save(model, out_dir / "own_loop.model")
    return model, fit


def toy_inputs(out_dir: Path):
    """The toy foundation (random weights over H, C, O at level A) and 60 configs at level B."""
    foundation, train_file = out_dir / "foundation.model", out_dir / "level_b_train.xyz"
    torch.save(toy.build_foundation(toy.LEVEL_A.e0s, seed=7), foundation)
    ase.io.write(train_file, toy.label(toy.random_configs(60, seed=2), toy.LEVEL_B))
    return foundation, train_file


def main(out_dir: Path, foundation=None, train_file=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the fit's tables and refit lines
    warnings.filterwarnings("ignore", message="The TorchScript type system")  # e3nn's, at every model load
    torch.set_default_dtype(torch.float64)
    out_dir.mkdir(parents=True, exist_ok=True)
    if foundation is None:
        foundation, train_file = toy_inputs(out_dir)
    model, _ = fine_tune(foundation, train_file, out_dir)
    print(f"saved {out_dir / 'own_loop.model'}: E0s {model.atomic_energies_fn.atomic_energies.tolist()}")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(Path(arguments[0] if arguments else "own_loop_run"), *arguments[1:3])
