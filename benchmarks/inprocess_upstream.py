"""`reestimate_e0s` against mace-torch's `estimate_e0s_from_foundation` in one process, as inside
`mace_run_train`: imports done, data read and the model loaded before the clock starts, at
mace_run_train's defaults (float64 default dtype, the foundation moved to float64).
Target: at least 2.5x faster on 1000 small held-out molecules on CPU, E0s within 1e-4 eV at full rank.

    python benchmarks/inprocess_upstream.py [--configs 1000] [--frames 30] [--our-dtype float32]
                                            [--our-batch-size 4] [--repeats 3] [--model mace_spice_15el.model]

Two cases, both with --model (default ../shared/models/mace_spice_15el.model, which covers H C O Ca):
- small molecules: the 200 solvent-xtb test molecules then ethanol-methanol-pbe test molecules,
  up to --configs (no config repeated, none from a training set; rank 3 of H C O);
- periodic frames: the first --frames 299-atom CaCO3 + 98 H2O frames of caco3-water (revPBE0-D3),
  rank 1 of 4: only the combination 196 H + C + 101 O + Ca is compared (upstream's minimum-norm
  E0s and ours, with the foundation as prior, differ elsewhere by design).

Each side gets its natural input: upstream mace's Configurations (what mace_run_train passes it),
ours the ase.Atoms. Upstream runs one config at a time (batch size 1); ours at its defaults with
weighting="total" (upstream's unweighted least squares) and `dtype=--our-dtype` (default: the API's, float32, on a
copy of the float64 model). Timing is the best of --repeats interleaved runs.
"""

import argparse
import logging

from _common import best_of_interleaved, quiet, record, shared

import mace  # noqa: F401  (before e3nn)
import ase.io
import numpy as np
import torch

from mace_e0_plugin import reestimate_e0s

DEFAULT_MODEL = "mace_spice_15el.model"
ENERGY_KEY_MOLECULES = "REF_energy"
ENERGY_KEY_FRAMES = "rPBE0D3_energy"
FRAMES_FILE = ("caco3-water", "training_set_30_revPBE0_D3.xyz")
GOAL_SPEED_UP = 2.5
GOAL_E0_EV = 1e-4


def held_out_molecules(n_configs: int):
    molecules = ase.io.read(shared("data", "solvent-xtb", "solvent_test.xyz"), ":")
    molecules += ase.io.read(shared("data", "ethanol-methanol-pbe", "test_eth_meth.xyz"), ":")
    molecules = [a for a in molecules if len(a) > 1]
    if n_configs > len(molecules):
        raise SystemExit(f"--configs {n_configs}: only {len(molecules)} held-out molecules are available")
    return molecules[:n_configs]


def mace_configurations(atoms_list, energy_key: str):
    from mace import data

    keys = data.KeySpecification.from_defaults()
    keys.update(info_keys={"energy": energy_key})
    return [data.config_from_atoms(atoms, key_specification=keys) for atoms in atoms_list]


class Case:
    """One comparison: the same configs for both sides, the model and tables ready."""

    def __init__(self, name: str, model, atoms_list, energy_key: str, our_dtype, our_batch_size=None):
        from mace.tools.utils import AtomicNumberTable

        self.name, self.model, self.atoms, self.energy_key, self.our_dtype = name, model, atoms_list, energy_key, our_dtype
        self.our_settings = {"batch_size": our_batch_size} if our_batch_size else {}
        self.configs = mace_configurations(atoms_list, energy_key)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=1000, help="small held-out molecules")
    parser.add_argument("--frames", type=int, default=30, help="299-atom caco3-water frames (at most 30)")
    parser.add_argument("--our-dtype", choices=["float32", "float64"], default=None,
                        help="reestimate_e0s(dtype=...): the dtype our pass runs the network in (default: the API's, float32)")
    parser.add_argument("--our-batch-size", type=int, default=None,
                        help="reestimate_e0s(batch_size=...) (default: its own); on CPU smaller batches can be faster")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model file in ../shared/models")
    options = parser.parse_args()

    logging.disable(logging.INFO)  # upstream logs a line per element; keep the timing clean
    torch.set_default_dtype(torch.float64)  # mace_run_train's default --default_dtype
    model = torch.load(shared("models", options.model), map_location="cpu", weights_only=False).to(torch.float64)
    frames = ase.io.read(shared("data", *FRAMES_FILE), ":")[:options.frames]
    cases = [Case(f"{options.configs} small molecules", model, held_out_molecules(options.configs),
                  ENERGY_KEY_MOLECULES, options.our_dtype, options.our_batch_size),
             Case(f"{len(frames)} caco3-water frames (299 atoms, periodic)", model, frames, ENERGY_KEY_FRAMES,
                  options.our_dtype, options.our_batch_size)]
    warm_up = Case("warm-up", model, cases[0].atoms[:20], ENERGY_KEY_MOLECULES, options.our_dtype,
                   options.our_batch_size)
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

    command = "python benchmarks/inprocess_upstream.py" + "".join(
        f" --{name.replace('_', '-')} {value}" for name, value in vars(options).items()
        if value != parser.get_default(name))
    our_dtype = options.our_dtype or "float32 (the API's default, on a copy of the float64 model)"
    name = "inprocess_upstream" + (f"-{options.our_dtype}" if options.our_dtype else "") + (
        f"-batch-{options.our_batch_size}" if options.our_batch_size else "")
    record(name, command, f"""
In one process, imports done, data read and {options.model} loaded and moved to float64 before timing,
default dtype float64 (mace_run_train's defaults). Upstream: `mace.data.estimate_e0s_from_foundation`
on mace Configurations, batch size 1, float64. Ours: `reestimate_e0s(model, atoms, energy_key=...,
weighting="total", dtype={options.our_dtype!r})` on the ase.Atoms, batch size {options.our_batch_size or "its default"}; network
dtype {our_dtype}. Best of {options.repeats} interleaved runs. Small molecules: solvent-xtb test, then
ethanol-methanol-pbe test (held out, none repeated). |dE0| only at full rank; "E0 sum per config" is the
largest difference of a config's E0 sum (counts . E0, eV): what the data determine, at any rank.

| configs | rank | upstream | ours | speed-up (goal >= {GOAL_SPEED_UP}x at 1000 small molecules) | max abs dE0, eV (goal <= {GOAL_E0_EV:g}) | E0 sum per config, eV |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
