"""GPU readiness (issue 15, item 8): the plugin's paths on cuda, each checked against its CPU answer.

    bash benchmarks/gpu_check.sh          # on a CUDA machine, under 5 minutes; appends to RESULTS.md
    python benchmarks/gpu_check.py --device cpu --no-record   # the same steps on CPU (a dry run)

1. The training hook end to end: ``mace_run_train --device=cuda --E0s=linear_system
   --E0s_refit=epoch+final`` on the toy foundation (``synthetic``) with planted E0 shifts: the
   first estimate recovers the shifts, the epoch and final refits run, and the saved model holds
   the report's E0s.
2. The rank-deficient solve on cuda (fixed stoichiometry: rank 1 of 3) next to
   ``torch.linalg.lstsq(driver='gels')``, the only driver torch has on cuda: QR without pivoting
   divides by a zero pivot, so its answer is huge and unstable; ours equals the CPU answer.
3. The API (``reestimate_e0s``) and diagnose (``diagnose_e0s`` and ``mace-e0 diagnose``) on cuda
   equal their CPU answers.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import HEAD, finetune_args, linear_system_report, model_e0s, record  # (also quiets warnings)

import mace  # noqa: F401  (first: it lets e3nn's torch.load work with torch>=2.6)
import ase.io
import numpy as np
import torch

from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.doors import EXIT_FLAGGED, EXIT_OK

SHIFTS = {1: -0.35, 6: 1.25, 8: -0.8}  # planted E0 changes, eV
ETHANOL = {1: 6, 6: 2, 8: 1}  # every config C2H6O: the counts matrix has rank 1 of 3
RECOVERY_EV = 1e-6  # exact data: the planted shifts come back to float64 round-off
SAME_AS_CPU_EV = 1e-8
TRAIN_TIMEOUT_S = 180


class Checks:
    def __init__(self):
        self.rows = []

    def add(self, what: str, value: str, ok: bool) -> None:
        self.rows.append((what, value, ok))
        print(f"[{'ok' if ok else 'FAIL'}] {what}: {value}", flush=True)

    @property
    def failed(self):
        return [what for what, _, ok in self.rows if not ok]

    def table(self) -> str:
        lines = ["| check | result | |", "|---|---|---|"]
        lines += [f"| {what} | {value} | {'ok' if ok else '**FAIL**'} |" for what, value, ok in self.rows]
        return "\n".join(lines)


def e0_row(e0s) -> np.ndarray:
    return np.array([e0s[z] for z in sorted(e0s, key=int)], dtype=float)


def planted_set(model, n_configs: int, seed: int, **kwargs):
    configs = synthetic.random_configs(n_configs, seed=seed, **kwargs)
    synthetic.label(configs, synthetic.LEVEL_B)
    synthetic.PlantedShift(SHIFTS).apply(model, configs)
    return configs


def truth() -> np.ndarray:
    return np.array([synthetic.LEVEL_A.e0s[z] + SHIFTS[z] for z in sorted(SHIFTS)])


def training_hook(checks: Checks, folder: Path, foundation: Path, device: str) -> None:
    model = torch.load(foundation, weights_only=False)
    train = folder / "train.xyz"
    valid = folder / "valid.xyz"
    ase.io.write(train, planted_set(model, 48, seed=11))
    ase.io.write(valid, planted_set(model, 8, seed=12))
    work = folder / "run"
    argv = ["mace_run_train", *finetune_args(work, foundation, train, valid, "REF_energy", epochs=2, batch_size=8,
                                             valid_batch_size=16, device=device),
            "--forces_key", "REF_forces", "--E0s", "linear_system", "--E0s_refit", "epoch+final"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
    seconds = time.perf_counter() - started
    checks.add(f"mace_run_train --device={device} --E0s=linear_system --E0s_refit=epoch+final finishes",
               f"exit {result.returncode}, {seconds:.1f} s", result.returncode == 0)
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
        return
    report = linear_system_report(work)
    head = report["heads"][HEAD]
    error = np.abs(e0_row(head["estimated_E0s"]) - truth()).max()
    checks.add("first estimate recovers the planted shifts", f"max error {error:.1e} eV, {head['n_configs']} configs",
               error < RECOVERY_EV and head["n_configs"] == 48)
    kinds = [(r["kind"], r["epoch"]) for r in report["refits"]]
    checks.add("refits in the report", ", ".join(f"{k} {e}" for k, e in kinds),
               kinds == [("epoch", 0), ("epoch", 1), ("final", 1)])
    rows = e0_row(model_e0s(work / "ft.model"))
    checks.add("ft.model holds the report's E0s", f"max |difference| {np.abs(rows - e0_row(head['E0s'])).max():.1e} eV",
               rows.tolist() == e0_row(head["E0s"]).tolist())
    log = (work / "logs" / "ft_run-1.log").read_text()
    lines = [line for line in ("E0 re-estimation for head 'Default'", "E0 refit, head 'Default', epoch 0",
                               "E0 refit, head 'Default', epoch 1", "E0 refit, head 'Default', final")]
    counts = [log.count(line) for line in lines]
    checks.add("each E0 log line once", ", ".join(f"{c}" for c in counts), counts == [1, 1, 1, 1])


def rank_deficient_solve(checks: Checks, foundation: Path, device: str) -> None:
    from mace_e0_plugin import reestimate_e0s

    model = torch.load(foundation, weights_only=False)
    configs = planted_set(model, 60, seed=5, stoichiometry=ETHANOL)
    on_cpu = reestimate_e0s(model, configs, "REF_energy", device="cpu", progress=False)
    on_device = reestimate_e0s(model, configs, "REF_energy", device=device, progress=False)
    ours_cpu, ours_device = e0_row(on_cpu.e0s), e0_row(on_device.e0s)
    difference = np.abs(ours_device - ours_cpu).max()
    checks.add(f"rank-deficient solve on {device}: ours equals CPU",
               f"rank {on_device.rank} of 3, max |E0 {device} - E0 cpu| {difference:.1e} eV",
               on_device.rank == 1 and difference < SAME_AS_CPU_EV)

    counts, residuals = on_cpu.estimate.heads[on_cpu.head].sample.arrays()
    n_atoms = counts.sum(axis=1, keepdims=True)
    a = torch.tensor(counts / n_atoms, dtype=torch.float64)  # per-atom weighting, as ours
    b = torch.tensor(residuals / n_atoms[:, 0], dtype=torch.float64)
    composition = np.array([ETHANOL[z] for z in sorted(ETHANOL)], dtype=float)
    ours_correction = e0_row(on_cpu.corrections)
    gels = torch.linalg.lstsq(a.to(device), b.to(device).unsqueeze(1), driver="gels").solution.squeeze(1).cpu().numpy()
    # The same, with the rows in another order: a stable solver gives the same answer.
    order = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(0))
    gels_again = torch.linalg.lstsq(a[order].to(device), b[order].to(device).unsqueeze(1),
                                    driver="gels").solution.squeeze(1).cpu().numpy()
    gelsd = torch.linalg.lstsq(a, b.unsqueeze(1), driver="gelsd").solution.squeeze(1).numpy()  # CPU, min-norm
    spread = np.abs(gels - gels_again).max()
    checks.add(f"torch.linalg.lstsq driver='gels' on {device}",
               f"corrections {np.array2string(gels, precision=3)} eV (rows reordered: "
               f"{np.array2string(gels_again, precision=3)}); largest |gels - ours| "
               f"{np.abs(gels - ours_correction).max():.3g} eV; determined combination "
               f"{composition @ gels:.6f} vs ours {composition @ ours_correction:.6f} eV",
               True)
    checks.add("gels is unusable on rank-deficient data (unstable or far from ours)",
               f"reordering rows moves it by {spread:.3g} eV; far from ours: "
               f"{not np.allclose(gels, ours_correction, atol=1e-3)}",
               (not np.all(np.isfinite(gels))) or spread > 1e-3 or not np.allclose(gels, ours_correction, atol=1e-3))
    checks.add("ours keeps the prior off the determined combination (gelsd, CPU, for reference)",
               f"ours along C2H6O {composition @ ours_correction:.6f} eV, gelsd {composition @ gelsd:.6f} eV",
               abs(composition @ ours_correction - composition @ gelsd) < 1e-6)


def api_and_diagnose(checks: Checks, folder: Path, foundation: Path, device: str) -> None:
    from mace_e0_plugin import diagnose_e0s, reestimate_e0s

    model = torch.load(foundation, weights_only=False)
    configs = planted_set(model, 40, seed=21)
    data = folder / "api.xyz"
    isolated = folder / "isolated.xyz"
    ase.io.write(data, configs)
    ase.io.write(isolated, synthetic.isolated_atoms(synthetic.LEVEL_B))
    results = {d: reestimate_e0s(str(foundation), [str(data)], "REF_energy", device=d, progress=False)
               for d in ("cpu", device)}
    difference = np.abs(e0_row(results[device].e0s) - e0_row(results["cpu"].e0s)).max()
    recovered = np.abs(e0_row(results[device].e0s) - truth()).max()
    checks.add(f"reestimate_e0s(device='{device}') equals CPU, recovers the shifts",
               f"max |{device} - cpu| {difference:.1e} eV, error {recovered:.1e} eV",
               difference < SAME_AS_CPU_EV and recovered < RECOVERY_EV)

    diagnoses = {d: diagnose_e0s(str(foundation), [str(data)], "REF_energy", "REF_forces", prior=str(isolated),
                                 device=d) for d in ("cpu", device)}
    worst = largest_numeric_difference(diagnoses["cpu"], diagnoses[device])
    checks.add(f"diagnose_e0s(device='{device}') equals CPU", f"largest |difference| of any number {worst:.1e}",
               worst < 1e-6)
    output = folder / "DIAG.json"
    command = [sys.executable, "-m", "mace_e0_plugin", "diagnose",  # = mace-e0, whichever layout
               str(foundation), str(data), "--energy-key", "REF_energy", "--forces-key",
               "REF_forces", "--prior", str(isolated), "--device", device, "--output", str(output), "--force"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    ok = result.returncode in (EXIT_OK, EXIT_FLAGGED) and output.exists()  # done, or something flagged
    worst = largest_numeric_difference(diagnoses["cpu"], json.loads(output.read_text())) if ok else float("nan")
    checks.add(f"mace-e0 diagnose --device {device}", f"exit {result.returncode}, largest |DIAG.json - cpu API| {worst:.1e}",
               ok and worst < 1e-6)
    if not ok:
        print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")


def largest_numeric_difference(one, other, skip=("timing", "seconds", "device", "inference_s", "solve_s")) -> float:
    """The largest |a - b| over the numbers two JSON-like trees share (timings left out)."""
    if isinstance(one, dict) and isinstance(other, dict):
        return max([largest_numeric_difference(one[k], other[k]) for k in one.keys() & other.keys()
                    if k not in skip] or [0.0])
    if isinstance(one, list) and isinstance(other, list) and len(one) == len(other):
        return max([largest_numeric_difference(a, b) for a, b in zip(one, other)] or [0.0])
    if isinstance(one, (int, float)) and isinstance(other, (int, float)) and not isinstance(one, bool):
        if np.isnan(one) and np.isnan(other):
            return 0.0
        return abs(float(one) - float(other))
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu runs the same steps as a dry run")
    parser.add_argument("--no-record", action="store_true", help="do not write benchmarks/RESULTS.md")
    options = parser.parse_args()
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available to torch (torch.cuda.is_available() is False); "
              "run it on a CUDA machine, or `python benchmarks/gpu_check.py --device cpu --no-record` for a dry run.")
        return 2
    started = time.perf_counter()
    checks = Checks()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        foundation = folder / "foundation.model"
        torch.save(synthetic.build_foundation(synthetic.LEVEL_A.e0s, seed=7), foundation)
        training_hook(checks, folder, foundation, options.device)
        rank_deficient_solve(checks, foundation, options.device)
        api_and_diagnose(checks, folder, foundation, options.device)
    seconds = time.perf_counter() - started
    summary = f"{len(checks.rows) - len(checks.failed)} of {len(checks.rows)} checks ok, {seconds:.0f} s"
    print(summary)
    if not options.no_record:
        record(f"gpu_check-{options.device}", f"bash benchmarks/gpu_check.sh (device {options.device})",
               checks.table() + f"\n\n{summary}\n")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
