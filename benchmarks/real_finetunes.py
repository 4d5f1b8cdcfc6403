"""Real fine-tunes of real pretrained models from ../shared, with mace's own E0 choice and with
--E0s=linear_system: the energy error on the validation set before the first epoch (mace logs it
as "Initial"), and the plugin's RMSE before and after on the training set.

    python benchmarks/real_finetunes.py

- mace_spice_15el.model (SPICE) -> CaCO3 + 98 H2O at revPBE0-D3: no isolated atoms, so mace's
  choice for a fine-tune is --E0s=foundation. Rank 1 of 4.
- mace01_cho_xtb.model (GFN2-xTB) -> ECEMC at DFT: the file has DFT IsolatedAtom frames, which
  mace uses as E0s whatever --E0s says. Rank 1 of 3.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import record, shared

CASES = [
    ("SPICE -> revPBE0-D3, CaCO3(H2O)98", "mace_spice_15el.model", ("caco3-water", "training_set_30_revPBE0_D3.xyz"),
     ["--energy_key", "rPBE0D3_energy", "--forces_key", "rPBE0D3_forces"], "foundation"),
    ("GFN2-xTB -> DFT, ECEMC", "mace01_cho_xtb.model", ("ecemc-dft", "ECEMC.xyz"),
     ["--energy_key", "REF_energy", "--forces_weight", "0"], "foundation (ignored: IsolatedAtom frames win)"),
]


def finetune(work: Path, model: Path, data: Path, extra, e0s: str) -> str:
    argv = ["mace_run_train", "--name", "ft", "--work_dir", str(work), "--seed", "1", "--foundation_model", str(model),
            "--train_file", str(data), "--valid_fraction", "0.1", "--E0s", e0s, "--max_num_epochs", "1",
            "--batch_size", "10", "--valid_batch_size", "10", "--device", "cpu", "--default_dtype", "float64",
            "--plot", "False", *extra]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def initial_rmse(log: str) -> float:
    return float(re.search(r"Initial: head: Default, .*?RMSE_E_per_atom=\s*([0-9.]+) meV", log).group(1))


def main():
    rows = []
    folder = Path(tempfile.mkdtemp())
    for i, (label, model_name, data_parts, extra, mace_choice) in enumerate(CASES):
        model, data = shared("models", model_name), shared("data", *data_parts)
        plain = initial_rmse(finetune(folder / f"{i}-mace", model, data, extra, "foundation"))
        log = finetune(folder / f"{i}-plugin", model, data, extra, "linear_system")
        head = json.loads((folder / f"{i}-plugin" / "results" / "ft_E0s_linear_system.json").read_text())["heads"]["Default"]
        rows.append(f"| {label} | {head['rank']} of {head['n_elements']} | {mace_choice}: {plain:,.1f} | "
                    f"{initial_rmse(log):,.2f} | {head['rmse_per_atom_before_meV']:,.1f} -> "
                    f"{head['rmse_per_atom_after_meV']:.2f} |")
        print(rows[-1], flush=True)
    record("real_finetunes", "python benchmarks/real_finetunes.py", """
One epoch of `mace_run_train` each (float64, CPU, `--valid_fraction 0.1`, seed 1). Energies in meV/atom.

| fine-tune | rank | validation RMSE before the first epoch, mace's E0s | ... with `--E0s=linear_system` | training-set RMSE in the plugin's report, before -> after |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
