"""The toy fine-tune's closing table: E0 corrections of the saved model and of the first estimate
against the shifts planted in the toy data.

    python examples/compare_e0s.py FOUNDATION.model FINETUNED.model REPORT.json TRUE_SHIFTS.json

The saved model's corrections are its atomic_energies (after the final refit) minus the
foundation's; the first estimate's come from the report's `estimated_E0s`, fitted before epoch 1.
"""

import contextlib
import io
import json
import sys
import warnings


def model_e0s(path: str) -> dict:
    """{Z as a string: E0 in eV} of a saved MACE model's first head."""
    import torch

    # mace's, e3nn's and torch's loading notices (cuequivariance, weights_only): not this table's business
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        model = torch.load(path, map_location="cpu", weights_only=False)
    energies = model.atomic_energies_fn.atomic_energies.detach().double()
    energies = energies.reshape(-1, len(model.atomic_numbers))[0]
    return {str(int(z)): float(e) for z, e in zip(model.atomic_numbers, energies)}


def main(foundation_path: str, finetuned_path: str, report_path: str, shifts_path: str) -> None:
    from ase.data import chemical_symbols

    content = json.load(open(report_path))
    report = content["heads"]["Default"]
    truth = json.load(open(shifts_path))
    foundation, saved = model_e0s(foundation_path), model_e0s(finetuned_path)
    first = report.get("estimated_E0s", report["E0s"])  # no estimated_E0s: no refit, the saved ones are the first
    print(f"{'El':>3} {'true shift':>11} {'saved model':>12} {'error':>8} {'first estimate':>15} {'error':>8}")
    for z, shift in truth.items():
        saved_correction = saved[z] - foundation[z]
        first_correction = first[z] - report["starting_E0s"][z]
        print(f"{chemical_symbols[int(z)]:>3} {shift:>11.4f} {saved_correction:>12.4f} {saved_correction - shift:>+8.4f} "
              f"{first_correction:>15.4f} {first_correction - shift:>+8.4f}")
    finals = [refit for refit in content.get("refits", []) if refit["kind"] == "final"]
    print(f"training E RMSE per atom: {report['rmse_per_atom_before_meV']:.1f} meV with the foundation's E0s, "
          f"{report['rmse_per_atom_after_meV']:.1f} meV with the first estimate, before epoch 1", end="")
    if finals:
        print(f"; saved network: {finals[-1]['rmse_per_atom_before_meV']:.1f} meV with the first estimate, "
              f"{finals[-1]['rmse_per_atom_after_meV']:.1f} meV after the final refit")
    else:
        print()
    print("Why they differ: the first estimate fits the network before fine-tuning; fine-tuning moves the "
          "network's energies, and the final refit (--E0s_refit=final, the default) re-fits the E0s to the "
          "network that is saved.")


if __name__ == "__main__":
    main(*sys.argv[1:5])
