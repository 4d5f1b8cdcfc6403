"""The plugin's estimate against mace-torch's `estimate_e0s_from_foundation` (what `mace_run_train
--E0s=estimated` runs: the foundation moved to float64, one config at a time, a NumPy solve), three ways.

    python benchmarks/upstream.py [--sizes 100 1000 10000] [--model M] [--max-atoms 30] [--batch-size N]
                                  [--workers N] [--device cpu]                  # --mode file, the default
    python benchmarks/upstream.py --mode cli [--configs 1000] [--repeats 3] [--model M]
    python benchmarks/upstream.py --mode inprocess [--configs 1000] [--frames 30] [--dtype float32]
                                  [--batch-size 4] [--repeats 3] [--model M]

- file (section `upstream`, `upstream-<model>` with another --model): `mace-e0 estimate` in this
  process against upstream from the same extxyz file (both load the model and read the file), the
  solvent-xtb molecules (at most --max-atoms atoms) replicated to each of --sizes; model
  mace01_cho_xtb. Target: 1.5x at 1000 configs.
- cli (section `cli_upstream`): each a fresh process, on held-out molecules: upstream a `python -c`
  of upstream_estimate's source, ours `mace-e0 estimate`; each also as a bare import of what it
  needs. Target: 1.5x at 1000 molecules.
- inprocess (section `inprocess_upstream`): as inside mace_run_train: imports done, data read, the
  model loaded and moved to float64 before the clock starts. Upstream gets mace Configurations,
  `reestimate_e0s` the ase.Atoms (weighting "total", upstream's objective; --dtype, default the
  API's float32 pass). Held-out molecules (rank 3 of 3) and the first --frames 299-atom caco3-water
  frames (rank 1 of 4: only the determined combination is compared). Target: 2.5x at 1000
  molecules, E0s within 1e-4 eV at full rank.

Held-out molecules: solvent-xtb test, then ethanol-methanol-pbe test, none repeated. Model for cli
and inprocess: mace_spice_15el (covers H C O Ca). Timing: one run after a warm-up (file), best of
--repeats (cli), best of --repeats interleaved (inprocess).
"""

import argparse
import inspect
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import best_of_interleaved, command_line, mace_e0, quiet, record, shared

import mace  # noqa: F401  (before e3nn)
import ase.io
import numpy as np
import torch

from mace_e0_plugin import reestimate_e0s

MODES = ("file", "cli", "inprocess")
DEFAULT_MODEL = {"file": "mace01_cho_xtb.model", "cli": "mace_spice_15el.model", "inprocess": "mace_spice_15el.model"}
USES = {  # the options each mode reads besides --mode and --model
    "file": {"sizes", "batch_size", "workers", "device", "max_atoms"},
    "cli": {"configs", "repeats"},
    "inprocess": {"configs", "frames", "dtype", "batch_size", "repeats"},
}
ENERGY_KEY_MOLECULES = "REF_energy"
ENERGY_KEY_FRAMES = "rPBE0D3_energy"
FRAMES_FILE = ("caco3-water", "training_set_30_revPBE0_D3.xyz")
GOAL_SPEED_UP = {"file": 1.5, "cli": 1.5, "inprocess": 2.5}
GOAL_E0_EV = 1e-4
UPSTREAM_IMPORTS = "import torch, mace; from mace import data"
OURS_IMPORTS = "import mace_e0_plugin.doors"


def upstream_estimate(model_path, data_file, device="cpu"):
    """What mace_run_train --E0s=estimated does, from the file to the E0s. Self-contained: --mode cli
    runs its source in a fresh process."""
    import torch
    from mace import data
    from mace.tools.utils import AtomicNumberTable

    # mace_run_train moves the foundation to --default_dtype (float64 by default) before estimating
    torch.set_default_dtype(torch.float64)
    model = torch.load(model_path, map_location=device, weights_only=False).to(torch.float64)
    keys = data.KeySpecification.from_defaults()
    keys.update(info_keys={"energy": "REF_energy"})
    _, configs = data.load_from_xyz(str(data_file), key_specification=keys)
    numbers = [int(z) for z in model.atomic_numbers]
    foundation_e0s = dict(zip(numbers, model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()))
    return data.estimate_e0s_from_foundation(model, foundation_e0s, configs, AtomicNumberTable(numbers),
                                             device=device)


def held_out_molecules(count: int):
    molecules = ase.io.read(shared("data", "solvent-xtb", "solvent_test.xyz"), ":")
    molecules += ase.io.read(shared("data", "ethanol-methanol-pbe", "test_eth_meth.xyz"), ":")
    molecules = [a for a in molecules if len(a) > 1]
    if count > len(molecules):
        sys.exit(f"--configs {count}: only {len(molecules)} held-out molecules are available")
    return molecules[:count]


def estimate_command(model, data_file, *settings) -> list:
    return ["estimate", model, data_file, "--energy-key", ENERGY_KEY_MOLECULES, *settings]


# ---------------------------------------------------------------- --mode file


def file_mode(options, model_name: str):
    def ours(data_file, workers):
        settings = (["--batch-size", options.batch_size] if options.batch_size else []) + (
            ["--num-workers", workers] if workers is not None else [])
        assert mace_e0(estimate_command(model_path, data_file, "--device", options.device, *settings)) == 0

    def timed(function, *args) -> float:
        with quiet():
            started = time.perf_counter()
            function(*args)
            return time.perf_counter() - started

    def written(size: int) -> Path:
        path = folder / f"data_{size}.xyz"
        if not path.exists():
            ase.io.write(path, (molecules * (size // len(molecules) + 1))[:size])
        return path

    model_path = shared("models", model_name)
    molecules = [a for a in ase.io.read(shared("data", "solvent-xtb", "solvent_train.xyz"), ":")
                 if 1 < len(a) <= (options.max_atoms or len(a))]
    folder = Path(tempfile.mkdtemp())
    timed(ours, written(50), 0)  # warm-up
    rows = []
    for size in options.sizes:
        upstream_s = timed(upstream_estimate, model_path, written(size), options.device)
        ours_s = timed(ours, written(size), options.workers)
        rows.append(f"| {size} | {upstream_s:.2f} s | {ours_s:.2f} s | **{upstream_s / ours_s:.2f}x** |")
        print(rows[-1], flush=True)
    dtype = str(torch.load(model_path, map_location="cpu", weights_only=False).atomic_energies_fn
                .atomic_energies.dtype).replace("torch.", "")
    sizes = sorted({len(a) for a in molecules})
    settings = ", ".join(f"{label} {value}" for label, value in (("batch size", options.batch_size),
                                                                  ("DataLoader workers", options.workers))
                         if value is not None) or "its default settings"
    name = "upstream" if model_name == DEFAULT_MODEL["file"] else f"upstream-{Path(model_name).stem}"
    return name, f"""
Inputs: {model_name} ({dtype}), solvent-xtb molecules ({sizes[0]}-{sizes[-1]} atoms) replicated to each
size, one extxyz file per size; both sides load the model and read the file. `mace-e0 estimate` with
{settings}; upstream with batch size 1.

| configs | mace-torch `estimate_e0s_from_foundation` | `mace-e0 estimate` | speed-up (target >= {GOAL_SPEED_UP['file']}x at 1000) |
|---|---|---|---|
""" + "\n".join(rows) + "\n"


# ---------------------------------------------------------------- --mode cli


def cli_mode(options, model_name: str):
    def seconds(argv) -> float:
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        return time.perf_counter() - started

    model = shared("models", model_name)
    data = Path(tempfile.mkdtemp()) / "held_out.xyz"
    molecules = held_out_molecules(options.configs)
    ase.io.write(data, molecules)
    upstream = inspect.getsource(upstream_estimate) + "\nimport sys\nupstream_estimate(sys.argv[1], sys.argv[2])\n"
    commands = {
        "upstream": [sys.executable, "-c", upstream, str(model), str(data)],
        "mace-e0 estimate": [sys.executable, "-m", "mace_e0_plugin",
                             *map(str, estimate_command(model, data, "--device", "cpu"))],
        "upstream's imports": [sys.executable, "-c", UPSTREAM_IMPORTS],
        "mace-e0's imports": [sys.executable, "-c", OURS_IMPORTS],
    }
    best = {name: min(seconds(argv) for _ in range(options.repeats)) for name, argv in commands.items()}
    speed_up = best["upstream"] / best["mace-e0 estimate"]
    rows = "\n".join(f"| {name} | {value:.2f} s |" for name, value in best.items())
    atoms = sum(len(a) for a in molecules) / len(molecules)
    return "cli_upstream", f"""
{len(molecules)} held-out molecules ({atoms:.1f} atoms on average), `{model_name}`, one fresh process each,
best of {options.repeats}. Upstream: mace's `estimate_e0s_from_foundation` as `mace_run_train
--E0s=estimated` runs it (float64, batch size 1); ours: `mace-e0 estimate` at its defaults.

| command | seconds |
|---|---|
{rows}

Speed-up end to end: **{speed_up:.2f}x** (goal >= {GOAL_SPEED_UP['cli']}x).
"""


# ---------------------------------------------------------------- --mode inprocess


class Case:
    """One in-process comparison: the same configs for both sides, the model and tables ready."""

    def __init__(self, name: str, model, atoms_list, energy_key: str, our_dtype, our_batch_size=None):
        from mace import data
        from mace.tools.utils import AtomicNumberTable

        self.name, self.model, self.atoms, self.energy_key, self.our_dtype = name, model, atoms_list, energy_key, our_dtype
        self.our_settings = {"batch_size": our_batch_size} if our_batch_size else {}
        keys = data.KeySpecification.from_defaults()
        keys.update(info_keys={"energy": energy_key})
        self.configs = [data.config_from_atoms(atoms, key_specification=keys) for atoms in atoms_list]
        model_numbers = [int(z) for z in model.atomic_numbers]
        self.foundation_e0s = dict(zip(model_numbers, model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()))
        # mace_run_train's z_table: the data's elements (without --foundation_model_elements)
        self.elements = sorted({int(z) for atoms in atoms_list for z in atoms.numbers})
        self.z_table = AtomicNumberTable(self.elements)
        self.counts = np.array([[np.sum(a.numbers == z) for z in self.elements] for a in atoms_list], dtype=float)
        self.upstream_e0s, self.our_e0s = None, None

    def upstream(self):
        from mace.data import estimate_e0s_from_foundation

        self.upstream_e0s = estimate_e0s_from_foundation(self.model, self.foundation_e0s, self.configs,
                                                         self.z_table, device="cpu")

    def ours(self):
        result = reestimate_e0s(self.model, self.atoms, energy_key=self.energy_key, weighting="total",
                                dtype=self.our_dtype, device="cpu", progress=False, **self.our_settings)
        self.our_e0s = result.e0s

    def differences(self):
        """(rank; largest |dE0| over the data's elements, None below full rank; largest difference of
        a config's E0 sum, counts . E0, over the configs: what the data determine, at any rank)."""
        ours = np.array([self.our_e0s[z] for z in self.elements])
        upstream = np.array([self.upstream_e0s[z] for z in self.elements])
        rank = int(np.linalg.matrix_rank(self.counts))
        e0 = float(np.max(np.abs(ours - upstream))) if rank == len(self.elements) else None
        return rank, e0, float(np.max(np.abs(self.counts @ (ours - upstream))))


def inprocess_mode(options, model_name: str):
    model = torch.load(shared("models", model_name), map_location="cpu", weights_only=False).to(torch.float64)
    frames = ase.io.read(shared("data", *FRAMES_FILE), ":")[:options.frames]
    dtype, batch_size = options.dtype, options.batch_size
    cases = [Case(f"{options.configs} small molecules", model, held_out_molecules(options.configs),
                  ENERGY_KEY_MOLECULES, dtype, batch_size),
             Case(f"{len(frames)} caco3-water frames (299 atoms, periodic)", model, frames, ENERGY_KEY_FRAMES,
                  dtype, batch_size)]
    warm_up = Case("warm-up", model, cases[0].atoms[:20], ENERGY_KEY_MOLECULES, dtype, batch_size)
    with quiet():
        warm_up.upstream(), warm_up.ours()

    rows = []
    for case in cases:
        with quiet():
            upstream_s, ours_s = best_of_interleaved(options.repeats, case.upstream, case.ours)
        rank, e0_diff, combination_diff = case.differences()
        atoms = sum(len(a) for a in case.atoms) / len(case.atoms)
        rows.append(f"| {case.name}, {atoms:.1f} atoms on average | {rank} of {len(case.elements)} | "
                    f"{upstream_s:.2f} s | {ours_s:.2f} s | **{upstream_s / ours_s:.2f}x** | "
                    f"{'-' if e0_diff is None else f'{e0_diff:.1e}'} | {combination_diff:.1e} |")
        print(rows[-1], flush=True)

    name = "inprocess_upstream" + (f"-{dtype}" if dtype else "") + (f"-batch-{batch_size}" if batch_size else "")
    return name, f"""
In one process, imports done, data read and {model_name} loaded and moved to float64 before timing,
default dtype float64 (mace_run_train's defaults). Upstream: `mace.data.estimate_e0s_from_foundation`
on mace Configurations, batch size 1, float64. Ours: `reestimate_e0s(model, atoms, energy_key=...,
weighting="total", dtype={dtype!r})` on the ase.Atoms, batch size {batch_size or "its default"}; network
dtype {dtype or "float32 (the API's default, on a copy of the float64 model)"}. Best of {options.repeats} interleaved runs. Small molecules: solvent-xtb test, then
ethanol-methanol-pbe test (held out, none repeated). |dE0| only at full rank; "E0 sum per config" is the
largest difference of a config's E0 sum (counts . E0, eV): what the data determine, at any rank.

| configs | rank | upstream | ours | speed-up (goal >= {GOAL_SPEED_UP['inprocess']}x at 1000 small molecules) | max abs dE0, eV (goal <= {GOAL_E0_EV:g}) | E0 sum per config, eV |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="file",
                        help="file: in this process from the same file, at --sizes; cli: fresh processes; "
                             "inprocess: as inside mace_run_train (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="file: data sizes")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="file, inprocess: our batch size (default: its own); on CPU smaller batches can be faster")
    parser.add_argument("--workers", type=int, default=None, help="file: mace-e0 --num-workers (default: its own)")
    parser.add_argument("--device", default="cpu", help="file: both sides' device")
    parser.add_argument("--model", default=None,
                        help="a model file in ../shared/models (default: " +
                             ", ".join(f"{mode}: {model}" for mode, model in DEFAULT_MODEL.items()) + ")")
    parser.add_argument("--max-atoms", type=int, default=None, help="file: only molecules with at most this many atoms")
    parser.add_argument("--configs", type=int, default=1000, help="cli, inprocess: small held-out molecules")
    parser.add_argument("--frames", type=int, default=30, help="inprocess: 299-atom caco3-water frames (at most 30)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None,
                        help="inprocess: reestimate_e0s(dtype=...), the dtype our pass runs the network in "
                             "(default: the API's, float32)")
    parser.add_argument("--repeats", type=int, default=3, help="cli, inprocess: timed runs of each side")
    options = parser.parse_args()
    ignored = [name for name, value in vars(options).items() if name not in USES[options.mode] | {"mode", "model"}
               and value != parser.get_default(name)]
    if ignored:
        parser.error(f"--mode {options.mode} does not use " + ", ".join(f"--{n.replace('_', '-')}" for n in ignored))
    model_name = options.model or DEFAULT_MODEL[options.mode]
    logging.disable(logging.INFO)  # upstream logs a line per element; keep the timing clean
    torch.set_default_dtype(torch.float64)  # mace_run_train's default --default_dtype
    name, body = {"file": file_mode, "cli": cli_mode, "inprocess": inprocess_mode}[options.mode](options, model_name)
    always = {"file": ("sizes",), "cli": ("configs",), "inprocess": ()}[options.mode]
    record(name, command_line("upstream.py", parser, options, always=always), body)


if __name__ == "__main__":
    main()
