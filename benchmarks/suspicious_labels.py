"""Which statistic, and which threshold, find broken labels (a failed SCF, a unit slip) among a
fit's configs without listing hard but correct ones (issue 15, item 7)?

    OMP_NUM_THREADS=1 python benchmarks/suspicious_labels.py [--quick]

For every clean set in ../shared with a real foundation, the E0s are re-estimated with the public
API (``reestimate_e0s``: per-atom weighting, the foundation's E0s as prior) and each config's
residual after the fit is formed, ``r_after = (E_ref - E_pred) - counts @ correction``. Then:

- z_atom   = (r_after/N - median) / (1.4826 MAD)   of the per-atom residuals (what MACE's loss sees)
- z_config = (r_after   - median) / (1.4826 MAD)   of the per-config residuals

(1.4826 MAD is the standard deviation of a normal distribution, estimated robustly: a few broken
labels move neither the median nor the MAD). On 300 held-out molecules three energies are
corrupted by +15, -25 and +40 eV, as a failed SCF or a unit slip would; the table shows where they
land. Big sets are subsampled (every k-th config) to keep the run to a few minutes.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from _common import frames, shared  # (also quiets mace's and torch's warnings)

ROBUST_SD_PER_MAD = 1.4826  # the standard deviation of a normal distribution is 1.4826 MAD
PROPOSED_THRESHOLD = 15.0  # robust SDs, on max(|z_atom|, |z_config|): mid-gap (log scale) between hard
# but correct configs (up to 9.3) and the weakest planted corruption (27) in the last full run
CORRUPTIONS_EV = (15.0, -25.0, 40.0)
N_HELD_OUT = 300
SPICE, XTB = "mace_spice_15el.model", "mace01_cho_xtb.model"

# (set, foundation, file, energy key, at most this many configs)
CLEAN_SETS = [
    ("solvent-xtb train", XTB, ("solvent-xtb", "solvent_train.xyz"), "REF_energy", None),
    ("solvent-xtb test", XTB, ("solvent-xtb", "solvent_test.xyz"), "REF_energy", None),
    ("ecemc-dft", XTB, ("ecemc-dft", "ECEMC.xyz"), "REF_energy", None),
    ("ethanol-methanol-pbe train", SPICE, ("ethanol-methanol-pbe", "train_eth_meth.xyz"), "REF_energy", 650),
    ("ethanol-methanol-pbe test", SPICE, ("ethanol-methanol-pbe", "test_eth_meth.xyz"), "REF_energy", 575),
    ("ethanol-methanol-pbe dimers", SPICE, ("ethanol-methanol-pbe", "test_dimers.xyz"), "REF_energy", None),
    *[(f"caco3-water {n} {level}", SPICE, ("caco3-water", f"training_set_{n}_{level}.xyz"), f"{key}_energy", None)
      for level, key in (("revPBE_D3", "rPBED3"), ("revPBE0_D3", "rPBE0D3"), ("MP2", "MP2")) for n in (30, 50)],
    *[(f"nacl-water {level}", SPICE, ("nacl-water", f"{level}.extxyz"), "energy_ref", 80)
      for level in ("MP2_gen2", "revPBE0-D3_gen3", "r2SCAN_gen3", "optB88-vdW_gen3")],
]
# (set, foundation, file, energy key): N_HELD_OUT molecules, three labels corrupted
PLANTED_SETS = [
    ("ethanol-methanol-pbe test, 3 corrupted", SPICE, ("ethanol-methanol-pbe", "test_eth_meth.xyz"), "REF_energy"),
    ("solvent-xtb test, 3 corrupted", XTB, ("solvent-xtb", "solvent_test.xyz"), "REF_energy"),
]
QUICK_LIMIT = 40


def robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    spread = ROBUST_SD_PER_MAD * np.median(np.abs(values - median))
    return (values - median) / spread


def residuals_after_fit(model_path: Path, configs, energy_key: str):
    """(atoms per config, residual after the fit in eV) of every config, in input order."""
    from mace_e0_plugin import reestimate_e0s

    result = reestimate_e0s(str(model_path), configs, energy_key, prior="foundation", weighting="per_atom",
                            device="cpu", progress=False)
    counts, residuals = result.estimate.heads[result.head].sample.arrays()
    assert counts.shape[0] == len(configs), "every config has an energy here"
    correction = np.array([result.corrections[z] for z in sorted(result.corrections)])  # columns: sorted Z
    after = residuals - counts @ correction
    n_atoms = counts.sum(axis=1)
    # Check of the column order: per-atom weighting makes counts^T W r_after vanish at the optimum.
    weights = 1.0 / n_atoms**2
    gradient = counts.T @ (weights * after)
    assert np.abs(gradient).max() < 1e-6 * max(1.0, np.abs(counts.T @ (weights * residuals)).max()), gradient
    return n_atoms, after, result


def molecules(parts, limit=None):
    configs = frames(parts)
    if limit and len(configs) > limit:
        step = -(-len(configs) // limit)
        configs = configs[::step]
    return configs


def statistics(n_atoms, after):
    return robust_z(after / n_atoms), robust_z(after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"at most {QUICK_LIMIT} configs per set (a smoke run)")
    options = parser.parse_args()
    started = time.perf_counter()
    rows = []
    print("clean sets: max |z| over configs (per atom, per config), and how many exceed the threshold "
          f"{PROPOSED_THRESHOLD:g}")
    header = (f"{'set':40s} {'n':>5s} {'rmse_after meV/at':>17s} {'max|z_atom|':>11s} {'max|z_cfg|':>10s} "
              f"{'max(both)':>9s} {'n>thr':>5s}  worst config (index, N, r_after eV)")
    print(header)
    for name, model, file, key, limit in CLEAN_SETS:
        configs = molecules(file, QUICK_LIMIT if options.quick else limit)
        n_atoms, after, _ = residuals_after_fit(shared("models", model), configs, key)
        z_atom, z_config = statistics(n_atoms, after)
        both = np.maximum(np.abs(z_atom), np.abs(z_config))
        worst = int(np.argmax(both))
        rmse = 1000 * np.sqrt(np.mean((after / n_atoms) ** 2))
        flagged = int((both > PROPOSED_THRESHOLD).sum())
        print(f"{name:40s} {len(configs):5d} {rmse:17.3f} {np.abs(z_atom).max():11.2f} {np.abs(z_config).max():10.2f} "
              f"{both.max():9.2f} {flagged:5d}  ({worst}, {int(n_atoms[worst])}, {after[worst]:+.4f})")
        rows.append((name, both.max()))

    print(f"\nplanted: {N_HELD_OUT} held-out molecules (or all there are), labels corrupted by "
          f"{', '.join(f'{c:+g}' for c in CORRUPTIONS_EV)} eV")
    rng = np.random.default_rng(15)
    weakest = []
    for name, model, file, key in PLANTED_SETS:
        configs = molecules(file)
        configs = [configs[i] for i in sorted(rng.choice(len(configs), min(N_HELD_OUT, len(configs)), replace=False))]
        if options.quick:
            configs = configs[:QUICK_LIMIT]
        planted = sorted(rng.choice(len(configs), len(CORRUPTIONS_EV), replace=False).tolist())
        for index, shift in zip(planted, CORRUPTIONS_EV):
            configs[index] = configs[index].copy()
            configs[index].info[key] += shift
        n_atoms, after, _ = residuals_after_fit(shared("models", model), configs, key)
        z_atom, z_config = statistics(n_atoms, after)
        both = np.maximum(np.abs(z_atom), np.abs(z_config))
        clean = np.setdiff1d(np.arange(len(configs)), planted)
        print(f"{name} ({len(configs)} configs): max |z| of the clean ones: per atom {np.abs(z_atom[clean]).max():.2f}, "
              f"per config {np.abs(z_config[clean]).max():.2f}")
        for index, shift in zip(planted, CORRUPTIONS_EV):
            print(f"    index {index:4d}  {shift:+6.1f} eV  N={int(n_atoms[index]):3d}  r_after {after[index]:+9.4f} eV  "
                  f"z_atom {z_atom[index]:+8.1f}  z_config {z_config[index]:+8.1f}")
        weakest.append(both[planted].min())
        listed = np.flatnonzero(both > PROPOSED_THRESHOLD).tolist()
        verdict = "exactly the corrupted ones" if listed == planted else f"NOT exactly the corrupted ones ({planted})"
        print(f"    listed at max(|z_atom|, |z_config|) > {PROPOSED_THRESHOLD:g}: {listed}: {verdict}")
        # With the corrupted configs left out of the fit: how far the others then sit (the refit of
        # --E0s_exclude_suspicious).
        keep = np.setdiff1d(np.arange(len(configs)), listed)
        n_kept, after_kept, _ = residuals_after_fit(shared("models", model), [configs[i] for i in keep], key)
        z_atom_kept, z_config_kept = statistics(n_kept, after_kept)
        print(f"    refit without them: max |z| per atom {np.abs(z_atom_kept).max():.2f}, "
              f"per config {np.abs(z_config_kept).max():.2f}")

    largest_clean = max(value for _, value in rows)
    print(f"\nlargest max(|z_atom|, |z_config|) on any clean set: {largest_clean:.2f} "
          f"({', '.join(n for n, v in rows if v == largest_clean)}); weakest planted corruption "
          f"{min(weakest):.2f}; threshold {PROPOSED_THRESHOLD:g}")
    print(f"command: OMP_NUM_THREADS=1 python benchmarks/suspicious_labels.py{' --quick' if options.quick else ''}"
          f"  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
