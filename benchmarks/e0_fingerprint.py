"""A fingerprint of the E0s on every set in ../shared, to show that a change of the code leaves them
bit for bit as they were: every E0 and the rank, as ``repr`` of the floats, per set, level, weighting
and pass dtype, through the Python API (the sequence ``mace-e0 estimate`` and the training door share).

    python benchmarks/e0_fingerprint.py OUT.json                 # with this tree's code
    python benchmarks/e0_fingerprint.py --compare OLD.json NEW.json

Run the first with each tree's own code (e.g. ``PYTHONPATH=/path/to/old/tree``), then compare.
"""

import argparse
import json
import sys

from _common import quiet, record, shared

# (label, model, data file parts, energy key, prior file parts or None)
CASES = [
    *[(f"caco3-{level}", "mace_spice_15el.model", ("caco3-water", f"training_set_50_{level}.xyz"), key, None)
      for level, key in (("revPBE_D3", "rPBED3_energy"), ("revPBE0_D3", "rPBE0D3_energy"), ("MP2", "MP2_energy"))],
    *[(f"nacl-{level}", "mace_spice_15el.model", ("nacl-water", f"{level}.extxyz"), "energy_ref", None)
      for level in ("MP2_gen2", "revPBE0-D3_gen3", "r2SCAN_gen3", "optB88-vdW_gen3")],
    ("solvent-xtb", "mace01_cho_xtb.model", ("solvent-xtb", "solvent_train.xyz"), "REF_energy", None),
    ("ecemc-dft", "mace01_cho_xtb.model", ("ecemc-dft", "ECEMC.xyz"), "REF_energy", None),
    ("ethmeth-pbe", "mace01_cho_xtb.model", ("ethanol-methanol-pbe", "train_eth_meth.xyz"), "REF_energy", None),
    ("ethmeth-pbe-isolated", "mace01_cho_xtb.model", ("ethanol-methanol-pbe", "train_eth_meth.xyz"), "REF_energy",
     ("ethanol-methanol-pbe", "isolated_atoms.xyz")),
]
WEIGHTINGS = ("per_atom", "total")
DTYPES = {"caco3-revPBE0_D3": ("float32", "float64")}  # the rest: the default pass dtype only


def fingerprint() -> dict:
    from mace_e0_plugin import reestimate_e0s

    found = {}
    for label, model, data, key, prior in CASES:
        for weighting in WEIGHTINGS:
            for dtype in DTYPES.get(label, ("float32",)):
                with quiet():
                    result = reestimate_e0s(str(shared("models", model)), [str(shared("data", *data))], key,
                                            weighting=weighting, dtype=dtype, progress=False,
                                            prior=str(shared("data", *prior)) if prior else None)
                name = f"{label}/{weighting}/{dtype}"
                found[name] = {"rank": result.rank, "E0s": {str(z): repr(e) for z, e in result.e0s.items()}}
                print(name, found[name]["rank"], flush=True)
    return found


def compare(old: dict, new: dict, paths) -> int:
    different = [name for name in old if old[name] != new.get(name)]
    missing = sorted(set(old) ^ set(new))
    lines = [f"DIFFERENT {name}: {old[name]} != {new.get(name)}" for name in different]
    verdict = (f"{len(old) - len(different)} of {len(old)} cases bit-identical (every E0 as repr of its float, and "
               f"the rank); {len(missing)} in one file only. Cases: {len(CASES)} sets and levels x the weightings "
               f"{', '.join(WEIGHTINGS)} (CaCO3 revPBE0-D3 also in float64).")
    record("e0_fingerprint", f"python benchmarks/e0_fingerprint.py --compare {' '.join(paths)}",
           "The E0s of one tree's code against another's, on every set in ../shared, through "
           "`reestimate_e0s`:\n\n" + "\n".join(lines + [verdict]) + "\n")
    return 1 if different or missing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--compare", action="store_true")
    args = parser.parse_args()
    if args.compare:
        old, new = (json.load(open(path)) for path in args.paths)
        return compare(old, new, args.paths)
    with open(args.paths[0], "w") as handle:
        json.dump(fingerprint(), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
