"""Real fine-tunes of real pretrained models from ../shared, with mace's own E0 choice and with
--E0s=linear_system: the energy error on the validation set before the first epoch (mace logs it
as "Initial"), and the plugin's RMSE before and after on the training set.

    python benchmarks/real_finetunes.py

- mace_spice_15el.model (SPICE) -> CaCO3 + 98 H2O at revPBE0-D3: no isolated atoms, so mace's
  choice for a fine-tune is --E0s=foundation. Rank 1 of 4.
- mace01_cho_xtb.model (GFN2-xTB) -> ECEMC at DFT: the file has DFT IsolatedAtom frames, which
  mace uses as E0s whatever --E0s says. Rank 1 of 3.
"""

import argparse
import tempfile
from pathlib import Path

from _common import HEAD, finetune_args, initial_errors, linear_system_report, record, run_checked, shared

CASES = [
    ("SPICE -> revPBE0-D3, CaCO3(H2O)98", "mace_spice_15el.model", ("caco3-water", "training_set_30_revPBE0_D3.xyz"),
     "rPBE0D3_energy", ["--forces_key", "rPBE0D3_forces"], "foundation"),
    ("GFN2-xTB -> DFT, ECEMC", "mace01_cho_xtb.model", ("ecemc-dft", "ECEMC.xyz"),
     "REF_energy", ["--forces_weight", "0"], "foundation (ignored: IsolatedAtom frames win)"),
]


def initial_rmse(work: Path, model: Path, data: Path, energy_key: str, extra, e0s: str) -> float:
    """One epoch of mace_run_train (float64, CPU, seed 1); the validation energy RMSE before it."""
    argv = ["mace_run_train", *finetune_args(work, model, data, 0.1, energy_key, epochs=1, batch_size=10,
                                             valid_batch_size=10), "--E0s", e0s, *extra]
    return initial_errors(run_checked(argv, "mace_run_train").stdout)[0]


def main():
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    rows = []
    folder = Path(tempfile.mkdtemp())
    for i, (label, model_name, data_parts, energy_key, extra, mace_choice) in enumerate(CASES):
        model, data = shared("models", model_name), shared("data", *data_parts)
        plain = initial_rmse(folder / f"{i}-mace", model, data, energy_key, extra, "foundation")
        ours = initial_rmse(folder / f"{i}-plugin", model, data, energy_key, extra, "linear_system")
        head = linear_system_report(folder / f"{i}-plugin")["heads"][HEAD]
        rows.append(f"| {label} | {head['rank']} of {head['n_elements']} | {mace_choice}: {plain:,.1f} | "
                    f"{ours:,.2f} | {head['rmse_per_atom_before_meV']:,.1f} -> "
                    f"{head['rmse_per_atom_after_meV']:.2f} |")
        print(rows[-1], flush=True)
    record("real_finetunes", "python benchmarks/real_finetunes.py", """
One epoch of `mace_run_train` each (float64, CPU, `--valid_fraction 0.1`, seed 1). Energies in meV/atom.

| fine-tune | rank | validation RMSE before the first epoch, mace's E0s | ... with `--E0s=linear_system` | training-set RMSE in the plugin's report, before -> after |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
