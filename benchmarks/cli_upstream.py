"""`mace-e0 estimate` against mace-torch's `estimate_e0s_from_foundation`, each as a fresh process
from the command line, on the same held-out extxyz file: what a user waits for, imports, model
unpickling and file reading included. Target: at least 1.5x faster at 1000 small molecules.

    python benchmarks/cli_upstream.py [--configs 1000] [--repeats 3] [--model mace_spice_15el.model]

Data: the solvent-xtb test molecules, then ethanol-methanol-pbe test molecules (held out, none
repeated). Upstream: a `python -c` doing what `mace_run_train --E0s=estimated` does (mace's
load_from_xyz, the foundation moved to float64, batch size 1). Ours: `mace-e0 estimate` at its
defaults. Each is also run as a bare `import` of what it needs, so the start-up both pay is shown.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import record, shared

import ase.io

UPSTREAM = """
import sys, torch
import mace
from mace import data
from mace.tools.utils import AtomicNumberTable
torch.set_default_dtype(torch.float64)
model = torch.load(sys.argv[1], map_location="cpu", weights_only=False).to(torch.float64)
keys = data.KeySpecification.from_defaults()
keys.update(info_keys={"energy": "REF_energy"})
_, configs = data.load_from_xyz(sys.argv[2], key_specification=keys)
numbers = [int(z) for z in model.atomic_numbers]
e0s = dict(zip(numbers, model.atomic_energies_fn.atomic_energies.reshape(-1).tolist()))
data.estimate_e0s_from_foundation(model, e0s, configs, AtomicNumberTable(numbers), device="cpu")
"""
UPSTREAM_IMPORTS = "import torch, mace; from mace import data"
OURS_IMPORTS = "import mace_e0_plugin.doors"


def held_out(count: int):
    frames = ase.io.read(shared("data", "solvent-xtb", "solvent_test.xyz"), ":")
    frames += ase.io.read(shared("data", "ethanol-methanol-pbe", "test_eth_meth.xyz"), ":")
    return [a for a in frames if len(a) > 1][:count]


def seconds(argv) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="mace_spice_15el.model", help="a model file in ../shared/models")
    options = parser.parse_args()
    model = shared("models", options.model)
    folder = Path(tempfile.mkdtemp())
    data = folder / "held_out.xyz"
    frames = held_out(options.configs)
    ase.io.write(data, frames)
    commands = {
        "upstream": [sys.executable, "-c", UPSTREAM, str(model), str(data)],
        "mace-e0 estimate": [sys.executable, "-m", "mace_e0_plugin", "estimate", str(model), str(data),
                             "--energy-key", "REF_energy", "--device", "cpu"],
        "upstream's imports": [sys.executable, "-c", UPSTREAM_IMPORTS],
        "mace-e0's imports": [sys.executable, "-c", OURS_IMPORTS],
    }
    best = {name: min(seconds(argv) for _ in range(options.repeats)) for name, argv in commands.items()}
    speed_up = best["upstream"] / best["mace-e0 estimate"]
    rows = "\n".join(f"| {name} | {value:.2f} s |" for name, value in best.items())
    atoms = sum(len(a) for a in frames) / len(frames)
    body = f"""
{len(frames)} held-out molecules ({atoms:.1f} atoms on average), `{options.model}`, one fresh process each,
best of {options.repeats}. Upstream: mace's `estimate_e0s_from_foundation` as `mace_run_train
--E0s=estimated` runs it (float64, batch size 1); ours: `mace-e0 estimate` at its defaults.

| command | seconds |
|---|---|
{rows}

Speed-up end to end: **{speed_up:.2f}x** (goal >= 1.5x).
"""
    print(body)
    record("cli_upstream", f"python benchmarks/cli_upstream.py --configs {options.configs}", body)


if __name__ == "__main__":
    main()
