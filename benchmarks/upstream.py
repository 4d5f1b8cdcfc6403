"""`mace-e0 estimate` against mace-torch's own `estimate_e0s_from_foundation` (`--E0s=estimated`),
end to end from the same extxyz file with the same model, at several data sizes.
Target: at least 1.5x faster at 1000 configs on CPU.

    python benchmarks/upstream.py [--sizes 100 1000 10000] [--batch-size 32] [--device cpu]

Upstream reads the file with mace's load_from_xyz, then runs the model one config at a time
(batch size 1) and solves with NumPy. Model: ../shared/models/mace01_cho_xtb.model; data: the
solvent-xtb molecules, replicated to each size.
"""

import argparse
import tempfile
from pathlib import Path

from _common import quiet, record, shared

import mace  # noqa: F401  (before e3nn)
import ase.io
import torch

from mace_e0_plugin.cli import main as mace_e0


def upstream(model_path: Path, data_file: Path, device: str) -> dict:
    """What mace_run_train --E0s=estimated does, from the file to the E0s."""
    from mace import data
    from mace.tools.utils import AtomicNumberTable

    model = torch.load(model_path, map_location=device, weights_only=False)
    keys = data.KeySpecification.from_defaults()
    keys.update(info_keys={"energy": "REF_energy"})
    _, configs = data.load_from_xyz(str(data_file), key_specification=keys)
    numbers = [int(z) for z in model.atomic_numbers]
    foundation_e0s = dict(zip(numbers, model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()))
    return data.estimate_e0s_from_foundation(model, foundation_e0s, configs, AtomicNumberTable(numbers),
                                             device=device)


def ours(model_path: Path, data_file: Path, device: str, batch_size: int, workers: int) -> None:
    assert mace_e0(["estimate", str(model_path), str(data_file), "--energy-key", "REF_energy", "--device", device,
                    "--batch-size", str(batch_size), "--num-workers", str(workers)]) == 0


def timed(function, *args) -> float:
    import time

    with quiet():
        started = time.perf_counter()
        function(*args)
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="mace-e0 --num-workers")
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()

    import logging

    logging.disable(logging.INFO)  # upstream logs a line per element; keep the timing clean
    torch.set_default_dtype(torch.float64)
    model_path = shared("models", "mace01_cho_xtb.model")
    molecules = [a for a in ase.io.read(shared("data", "solvent-xtb", "solvent_train.xyz"), ":") if len(a) > 1]
    folder = Path(tempfile.mkdtemp())
    timed(ours, model_path, _write(folder, molecules, 50), options.device, options.batch_size, 0)  # warm-up
    rows = []
    for size in options.sizes:
        data_file = _write(folder, molecules, size)
        upstream_s = timed(upstream, model_path, data_file, options.device)
        ours_s = timed(ours, model_path, data_file, options.device, options.batch_size, options.workers)
        rows.append(f"| {size} | {upstream_s:.2f} s | {ours_s:.2f} s | **{upstream_s / ours_s:.2f}x** |")
        print(rows[-1], flush=True)
    sizes = " ".join(str(s) for s in options.sizes)
    record("upstream", f"python benchmarks/upstream.py --sizes {sizes} --batch-size {options.batch_size} "
                       f"--workers {options.workers} --device {options.device}", f"""
Inputs: mace01_cho_xtb.model (float64), solvent-xtb molecules (8-85 atoms) replicated to each size, one
extxyz file per size; both sides load the model and read the file. `mace-e0 estimate` with batch size
{options.batch_size} and {options.workers} DataLoader workers; upstream with batch size 1.

| configs | mace-torch `estimate_e0s_from_foundation` | `mace-e0 estimate` | speed-up (target >= 1.5x at 1000) |
|---|---|---|---|
""" + "\n".join(rows) + "\n")


def _write(folder: Path, molecules, size: int) -> Path:
    path = folder / f"data_{size}.xyz"
    if not path.exists():
        ase.io.write(path, (molecules * (size // len(molecules) + 1))[:size])
    return path


if __name__ == "__main__":
    main()
