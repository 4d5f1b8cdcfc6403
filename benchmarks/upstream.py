"""`mace-e0 estimate` against mace-torch's own `estimate_e0s_from_foundation` (`--E0s=estimated`),
end to end from the same extxyz file with the same model, at several data sizes.
Target: at least 1.5x faster at 1000 configs on CPU.

    python benchmarks/upstream.py [--sizes 100 1000 10000] [--model mace_spice_15el.model] [--max-atoms 30]

Upstream reads the file with mace's load_from_xyz, then runs the model one config at a time
(batch size 1) and solves with NumPy. Model: ../shared/models/mace01_cho_xtb.model (or --model);
data: the solvent-xtb molecules (at most --max-atoms atoms), replicated to each size. `mace-e0
estimate` runs at its default settings unless --batch-size or --workers say otherwise.
"""

import argparse
import tempfile
from pathlib import Path

from _common import quiet, record, shared

import mace  # noqa: F401  (before e3nn)
import ase.io
import torch

from mace_e0_plugin.doors import main as mace_e0

DEFAULT_MODEL = "mace01_cho_xtb.model"


def upstream(model_path: Path, data_file: Path, device: str) -> dict:
    """What mace_run_train --E0s=estimated does, from the file to the E0s."""
    from mace import data
    from mace.tools.utils import AtomicNumberTable

    # mace_run_train moves the foundation to --default_dtype (float64 by default) before estimating
    model = torch.load(model_path, map_location=device, weights_only=False).to(torch.get_default_dtype())
    keys = data.KeySpecification.from_defaults()
    keys.update(info_keys={"energy": "REF_energy"})
    _, configs = data.load_from_xyz(str(data_file), key_specification=keys)
    numbers = [int(z) for z in model.atomic_numbers]
    foundation_e0s = dict(zip(numbers, model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()))
    return data.estimate_e0s_from_foundation(model, foundation_e0s, configs, AtomicNumberTable(numbers),
                                             device=device)


def ours(model_path: Path, data_file: Path, device: str, batch_size, workers) -> None:
    settings = (["--batch-size", str(batch_size)] if batch_size else []) + (
        ["--num-workers", str(workers)] if workers is not None else [])
    assert mace_e0(["estimate", str(model_path), str(data_file), "--energy-key", "REF_energy", "--device", device,
                    *settings]) == 0


def timed(function, *args) -> float:
    import time

    with quiet():
        started = time.perf_counter()
        function(*args)
        return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--batch-size", type=int, default=None, help="mace-e0 --batch-size (default: its own)")
    parser.add_argument("--workers", type=int, default=None, help="mace-e0 --num-workers (default: its own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model file in ../shared/models")
    parser.add_argument("--max-atoms", type=int, default=None, help="only molecules with at most this many atoms")
    options = parser.parse_args()

    import logging

    logging.disable(logging.INFO)  # upstream logs a line per element; keep the timing clean
    torch.set_default_dtype(torch.float64)
    model_path = shared("models", options.model)
    molecules = [a for a in ase.io.read(shared("data", "solvent-xtb", "solvent_train.xyz"), ":")
                 if 1 < len(a) <= (options.max_atoms or len(a))]
    folder = Path(tempfile.mkdtemp())
    timed(ours, model_path, _write(folder, molecules, 50), options.device, options.batch_size, 0)  # warm-up
    rows = []
    for size in options.sizes:
        data_file = _write(folder, molecules, size)
        upstream_s = timed(upstream, model_path, data_file, options.device)
        ours_s = timed(ours, model_path, data_file, options.device, options.batch_size, options.workers)
        rows.append(f"| {size} | {upstream_s:.2f} s | {ours_s:.2f} s | **{upstream_s / ours_s:.2f}x** |")
        print(rows[-1], flush=True)
    command = "python benchmarks/upstream.py --sizes " + " ".join(str(s) for s in options.sizes) + "".join(
        f" --{name.replace('_', '-')} {value}" for name, value in vars(options).items()
        if name != "sizes" and value != parser.get_default(name))
    dtype = str(torch.load(model_path, map_location="cpu", weights_only=False).atomic_energies_fn
                .atomic_energies.dtype).replace("torch.", "")
    sizes = sorted({len(a) for a in molecules})
    settings = ", ".join(f"{label} {value}" for label, value in (("batch size", options.batch_size),
                                                                  ("DataLoader workers", options.workers))
                         if value is not None) or "its default settings"
    name = "upstream" if options.model == DEFAULT_MODEL else f"upstream-{Path(options.model).stem}"
    record(name, command, f"""
Inputs: {options.model} ({dtype}), solvent-xtb molecules ({sizes[0]}-{sizes[-1]} atoms) replicated to each
size, one extxyz file per size; both sides load the model and read the file. `mace-e0 estimate` with
{settings}; upstream with batch size 1.

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
