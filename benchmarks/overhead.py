"""Cost of the whole E0 estimate (collection + solve) against a bare batched no-grad energy pass of
the same model over the same data and batch size. Target: at most 1.2x, in both places it runs.

    python benchmarks/overhead.py [--configs 1000] [--batch-size 32] [--device cpu]

- hook: the graphs are already built (mace's training dataset holds them), as at the entry of
  mace_run_train's training;
- mace-e0 estimate: end to end from the extxyz file (model load, graph building, report), against
  the same reading and a bare pass.

Model: ../shared/models/mace01_cho_xtb.model; data: ../shared/data/solvent-xtb, replicated.
"""

import argparse
import tempfile
from pathlib import Path

from _common import best_of_interleaved, mace_e0, quiet, record, shared

import mace  # noqa: F401  (before e3nn)
import ase.io
import torch

from mace_e0_plugin.glue import (HeadRequest, estimate_e0s, evaluation_mode, load_data, make_loader,
                                 model_atomic_numbers, read_e0s, read_model)
from mace_e0_plugin.math import E0LinearSystem


@torch.no_grad()
def bare_pass(model, dataset, batch_size, device):
    with evaluation_mode(model):
        for batch in make_loader(dataset, batch_size):
            batch = batch.to(device)
            model(batch.to_dict(), training=False, compute_force=False)["energy"]
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()

    model_path = shared("models", "mace01_cho_xtb.model")
    molecules = [a for a in ase.io.read(shared("data", "solvent-xtb", "solvent_train.xyz"), ":") if len(a) > 1]
    frames = (molecules * (options.configs // len(molecules) + 1))[:options.configs]
    folder = Path(tempfile.mkdtemp())
    data_file = folder / "data.xyz"
    ase.io.write(data_file, frames)
    torch.set_default_dtype(torch.float64)
    device, batch = options.device, options.batch_size

    # hook: graphs prebuilt, as in mace's training dataset
    model = read_model(str(model_path)).to(device)
    lazy = load_data([str(data_file)], model, "Default", "REF_energy").dataset
    graphs = [lazy[i] for i in range(len(lazy))]
    request = HeadRequest(name="Default", index=0, dataset=graphs, prior_e0s=read_e0s(model, 0))
    bare_pass(model, graphs, batch, device)  # warm-up
    hook_bare, hook_estimate = best_of_interleaved(
        options.repeats, lambda: bare_pass(model, graphs, batch, device),
        lambda: estimate_e0s(model, [request], device, batch, progress=False))

    # mace-e0 estimate, end to end from the file
    def cli_bare():
        loaded_model = read_model(str(model_path)).to(device)
        bare_pass(loaded_model, load_data([str(data_file)], loaded_model, "Default", "REF_energy").dataset,
                  batch, device)

    def cli_estimate():
        with quiet():
            # --dtype float64: the bare pass's dtype, so that the ratio is the overhead alone (the
            # default float32 pass is faster still: benchmarks/dtype_accuracy.py)
            assert mace_e0(["estimate", str(model_path), str(data_file), "--energy-key", "REF_energy",
                            "--batch-size", str(batch), "--device", device, "--dtype", "float64"]) == 0

    cli_bare_s, cli_estimate_s = best_of_interleaved(options.repeats, cli_bare, cli_estimate)
    statistics_bytes = E0LinearSystem(model_atomic_numbers(model)).flat().numel() * 8

    record("overhead", f"python benchmarks/overhead.py --configs {options.configs} --batch-size {batch} "
                       f"--device {device}", f"""
Inputs: mace01_cho_xtb.model (float64), {len(frames)} configs of solvent-xtb ({sum(len(a) for a in frames)} atoms),
batch size {batch}, device {device}, best of {options.repeats}.

| where | bare no-grad energy pass | whole E0 estimate | ratio (target <= 1.2) |
|---|---|---|---|
| training hook (graphs already built) | {hook_bare:.3f} s | {hook_estimate:.3f} s | **{hook_estimate / hook_bare:.3f}** |
| `mace-e0 estimate`, from the file | {cli_bare_s:.3f} s | {cli_estimate_s:.3f} s | **{cli_estimate_s / cli_bare_s:.3f}** |

Statistics kept: {statistics_bytes} bytes for {len(model_atomic_numbers(model))} elements, whatever the number of configs.
""")


if __name__ == "__main__":
    main()
