"""The float32 pass (the default) against float64 throughout, on the real models and data in
../shared: `mace-e0 estimate`, and the training hook's first estimate and final refit. Prints, per
set, the time and the largest difference of any E0 and of any determined combination's value.
Goal: within 1e-4 eV.

    python benchmarks/dtype_accuracy.py [--hook-configs 24]

Graphs are built in float64 either way, so reference energies keep every digit, and the E0 part
of each prediction is summed in float64 from the counts: b = E_ref - counts . E0 - E_interaction.
Only the interaction energy comes from the float32 network. For the hook, both runs train the same
float64 network (the pass dtype changes only our passes); the final refit is of the checkpoint
mace saves, so its difference includes that of the trajectories that the first estimates start.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import HEAD, finetune_args, linear_system_report, mace_e0, quiet, record, shared

import ase.io
import mace  # noqa: F401  (before e3nn)

CASES = [  # model, data, energy key, forces key, prior
    ("mace01_cho_xtb.model", ("solvent-xtb", "solvent_train.xyz"), "REF_energy", "REF_forces", None),
    ("mace01_cho_xtb.model", ("ecemc-dft", "ECEMC.xyz"), "REF_energy", None, None),
    ("mace_spice_15el.model", ("ethanol-methanol-pbe", "train_eth_meth.xyz"), "REF_energy", "REF_forces",
     ("ethanol-methanol-pbe", "isolated_atoms.xyz")),
    ("mace_spice_15el.model", ("caco3-water", "training_set_30_revPBE0_D3.xyz"), "rPBE0D3_energy",
     "rPBE0D3_forces", None),
    ("mace_spice_15el.model", ("nacl-water", "revPBE0-D3_gen3.extxyz"), "energy_ref", "forces_ref", None),
]


def differences(fast: dict, exact: dict, e0s_key: str = "E0s"):
    """(largest |dE0|, largest |d value of a determined combination|), eV."""
    a, b = fast[e0s_key], exact[e0s_key]
    e0 = max(abs(a[z] - b[z]) for z in a)
    combination = max((abs(sum(c * (a[str(z)] - b[str(z)]) for c, z in combo))
                       for combo in exact["determined_coefficients"]), default=e0)
    return e0, combination


def estimate(model: Path, data: Path, key: str, prior, dtype: str, output: Path) -> float:
    argv = ["estimate", str(model), str(data), "--energy-key", key, "--output", str(output), "--force",
            "--device", "cpu", "--dtype", dtype] + (["--prior", str(prior)] if prior else [])
    with quiet():
        started = time.perf_counter()
        assert mace_e0(argv) == 0
        return time.perf_counter() - started


def fine_tune(model: Path, train: Path, valid: Path, key: str, forces: str, prior, dtype: str, work: Path) -> dict:
    """One epoch of a naive fine-tune with the final refit; the report of the run."""
    from mace import tools
    from mace.cli import run_train

    argv = finetune_args(work, model, train, valid, key, epochs=1, batch_size=4, valid_batch_size=8) + [
        "--forces_key", forces or "no_forces", "--E0s", "linear_system", "--E0s_refit", "final", "--E0s_dtype", dtype,
        "--multiheads_finetuning", "False", "--lr", "1e-3"] + (["--E0s_prior", str(prior)] if prior else [])
    with quiet():
        run_train.run(tools.build_default_arg_parser().parse_args(argv))
    return linear_system_report(work)["heads"][HEAD]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hook-configs", type=int, default=24, help="training configs per hook run")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    model_name, data, key, _, _ = CASES[0]
    estimate(shared("models", model_name), shared("data", *data), key, None, "float32", folder / "warm-up.json")
    rows = []
    for model_name, data, key, forces, prior in CASES:
        model, data_file = shared("models", model_name), shared("data", *data)
        prior_file = shared("data", *prior) if prior else None
        fast, exact = folder / "fast.json", folder / "exact.json"
        fast_s = estimate(model, data_file, key, prior_file, "float32", fast)
        exact_s = estimate(model, data_file, key, prior_file, "float64", exact)
        a, b = (json.loads(p.read_text())["heads"]["Default"] for p in (fast, exact))
        e0, combination = differences(a, b)
        row = (f"| {model_name} | {'/'.join(data)} | {b['rank']} of {b['n_elements']} | mace-e0 estimate "
               f"({b['n_configs']}) | {fast_s:.1f} s / {exact_s:.1f} s | {e0:.1e} | {combination:.1e} |")
        rows.append(row)
        print(row, flush=True)

        frames = [a for a in ase.io.read(data_file, ":") if len(a) > 1]
        train, valid = folder / "train.xyz", folder / "valid.xyz"
        ase.io.write(train, frames[:options.hook_configs])
        ase.io.write(valid, frames[options.hook_configs:options.hook_configs + 4] or frames[:2])
        runs = {dtype: fine_tune(model, train, valid, key, forces, prior_file, dtype, folder / f"ft-{dtype}-{len(rows)}")
                for dtype in ("float32", "float64")}
        for what, e0s_key in (("hook: first estimate", "estimated_E0s"), ("hook: final refit", "E0s")):
            e0, combination = differences(runs["float32"], runs["float64"], e0s_key)
            row = (f"| {model_name} | {'/'.join(data)} | {runs['float64']['rank']} of {runs['float64']['n_elements']} "
                   f"| {what} ({runs['float64']['n_configs']}) | | {e0:.1e} | {combination:.1e} |")
            rows.append(row)
            print(row, flush=True)
    worst = max(float(value) for row in rows for value in row.split("|")[-3:-1])
    record("dtype_accuracy", "python benchmarks/dtype_accuracy.py", f"""
The float32 pass (the default) against float64, on every set in ../shared: `mace-e0 estimate`
end to end from the file (times: float32 / float64), and a one-epoch fine-tune's first estimate
and final refit (`--E0s_dtype float32` against `float64`, the same float64 training).
Differences in eV: the largest over all E0s, and over the values of the determined combinations
(for a full-rank set, the E0s themselves). Goal: within 1e-4 eV; worst here {worst:.1e} eV.

| model | data | rank | what (configs) | time | max abs dE0 / eV | max abs d(combination) / eV |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
