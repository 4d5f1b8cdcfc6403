"""`mace-e0 estimate` in the model's own dtype (the default) against float64 throughout, on real
models and data from ../shared: time, and the largest difference of any E0 and of any determined
combination's value. Target: within 1e-4 eV.

    python benchmarks/dtype_accuracy.py

Graphs are built in float64 either way, so reference energies keep every digit, and the E0 part
of each prediction is summed in float64 from the counts: b = E_ref - counts . E0 - E_interaction.
Only the interaction energy comes from the float32 network.
"""

import json
import tempfile
import time
from pathlib import Path

from _common import quiet, record, shared

import mace  # noqa: F401  (before e3nn)

from mace_e0_plugin.doors import main as mace_e0

CASES = [  # model, data, energy key, prior, --dtype of the fast run (None: the model's own)
    ("mace_tutorial_cho_xtb_swa.model", ("solvent-xtb", "solvent_train.xyz"), "REF_energy", None, None),
    ("mace_tutorial_cho_xtb_swa.model", ("ethanol-methanol-pbe", "train_eth_meth.xyz"), "REF_energy",
     ("ethanol-methanol-pbe", "isolated_atoms.xyz"), None),
    ("mace_spice_15el.model", ("caco3-water", "training_set_30_revPBE0_D3.xyz"), "rPBE0D3_energy", None, None),
    ("mace01_cho_xtb.model", ("ecemc-dft", "ECEMC.xyz"), "REF_energy", None, "float32"),
]


def estimate(model: Path, data: Path, key: str, prior, dtype, output: Path) -> float:
    argv = ["estimate", str(model), str(data), "--energy-key", key, "--output", str(output), "--force",
            "--device", "cpu"] + (["--prior", str(prior)] if prior else []) + (["--dtype", dtype] if dtype else [])
    with quiet():
        started = time.perf_counter()
        assert mace_e0(argv) == 0
        return time.perf_counter() - started


def main():
    folder = Path(tempfile.mkdtemp())
    model_name, data, key, _, _ = CASES[0]
    estimate(shared("models", model_name), shared("data", *data), key, None, None, folder / "warm-up.json")
    rows = []
    for model_name, data, key, prior, dtype in CASES:
        model, data_file = shared("models", model_name), shared("data", *data)
        prior_file = shared("data", *prior) if prior else None
        fast, exact = folder / "fast.json", folder / "exact.json"
        fast_s = estimate(model, data_file, key, prior_file, dtype, fast)
        exact_s = estimate(model, data_file, key, prior_file, "float64", exact)
        a, b = (json.loads(p.read_text())["heads"]["Default"] for p in (fast, exact))
        e0_diff = max(abs(a["E0s"][z] - b["E0s"][z]) for z in a["E0s"])
        combination_diff = max((abs(sum(c * (a["E0s"][str(z)] - b["E0s"][str(z)]) for c, z in combination))
                                for combination in b["determined_coefficients"]), default=0.0)
        rows.append(f"| {model_name} | {'/'.join(data)} ({b['n_configs']}) | {b['rank']} of {b['n_elements']} | "
                    f"{dtype or 'float32 (its own)'} | {fast_s:.1f} s | {exact_s:.1f} s | {exact_s / fast_s:.2f}x | "
                    f"{e0_diff:.1e} | {combination_diff:.1e} |")
        print(rows[-1], flush=True)
    record("dtype_accuracy", "python benchmarks/dtype_accuracy.py", """
`mace-e0 estimate` at default settings (the model in its own dtype; `mace01_cho_xtb`, a float64
model, forced to float32 with `--dtype float32`) against `--dtype float64`, end to end from the file.
Differences in eV: the largest over all E0s, and over the values of the determined combinations.

| model | data (configs) | rank | fast run | fast | float64 | speed-up | max abs dE0 / eV | max abs d(combination) / eV |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
