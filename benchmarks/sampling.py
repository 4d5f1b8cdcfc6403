"""Is a sample of a large set worth an option, and where? E0s from composition-stratified samples
of --max-configs configs against those from every config, on the largest real sets in ../shared,
with the time of the pass.

    python benchmarks/sampling.py

Per set and sample size: the largest |E0(sample) - E0(all)| over the elements (eV), the largest
standard error the sample's own fit reports (eV), and the pass's time against the whole set's.
The decision it informs (docs/options.md): `--max-configs` stays in `mace-e0` and the Python API,
where a file can be giant and the pass is all the work; `mace_run_train` reads all its data, since
there the estimate costs a small share of one epoch (benchmarks/mp_scale.py: 0.043 at MACE-MP-0
scale); a tolerance on the standard errors and a sampling seed go, since the sample size alone sets
the cost, and its fit reports its own standard errors.
"""

import argparse
import time

from _common import quiet, record, shared

SETS = [
    ("ethanol + methanol, PBE (1300 configs)", "mace01_cho_xtb.model", ("ethanol-methanol-pbe", "train_eth_meth.xyz"),
     "REF_energy"),
    ("solvent mixtures, GFN2-xTB (200 configs)", "mace01_cho_xtb.model", ("solvent-xtb", "solvent_train.xyz"),
     "REF_energy"),
    ("NaCl in water, revPBE0-D3 (150 configs)", "mace_spice_15el.model", ("nacl-water", "revPBE0-D3_gen3.extxyz"),
     "energy_ref"),
]
SIZES = (25, 50, 100, 200, 400)


def estimate(model, frames, key, max_configs=None):
    from mace_e0_plugin import reestimate_e0s

    started = time.perf_counter()
    with quiet():
        result = reestimate_e0s(model, frames, key, max_configs=max_configs, progress=False)
    return result, time.perf_counter() - started


def largest_standard_error(result) -> str:
    """In meV, over the elements the data determine alone; rank-deficient data may determine none."""
    determined = [e for e in result.standard_errors.values() if e == e]
    return f"{1e3 * max(determined):.2f}" if determined else "none alone"


def main():
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    import ase.io

    from mace_e0_plugin.glue import read_model

    rows = []
    for label, model_name, data, key in SETS:
        model = read_model(str(shared("models", model_name)))
        frames = ase.io.read(shared("data", *data), ":")
        estimate(model, frames[:10], key)  # warm-up: the first pass pays for lazy set-up
        everything, whole_s = estimate(model, frames, key)
        for size in [s for s in SIZES if s < len(frames)]:
            sample, seconds = estimate(model, frames, key, max_configs=size)
            error = max(abs(sample.e0s[z] - everything.e0s[z]) for z in everything.e0s)
            rows.append(f"| {label} | {size} | {1e3 * error:.2f} | {largest_standard_error(sample)} | "
                        f"{seconds / whole_s:.2f} |")
            print(rows[-1], flush=True)
        rows.append(f"| {label} | all ({len(frames)}) | 0 | {largest_standard_error(everything)} "
                    f"| 1.00 (= {whole_s:.1f} s) |")
        print(rows[-1], flush=True)
    record("sampling", "python benchmarks/sampling.py", """
`reestimate_e0s` (the default float32 pass, the default prior), on a composition-stratified sample of
`max_configs` configs and on every config. Error: the largest |E0(sample) - E0(all)| over the
elements; SE: the largest standard error the sample's own fit reports (elements the data determine);
time: the sample's pass against the whole set's, in the same run (after a warm-up pass).

| set | configs | largest E0 error / meV | largest SE / meV | time / whole set's |
|---|---|---|---|---|
""" + "\n".join(rows) + """

A sample costs accuracy (tens of meV per element below 100 configs, and not monotonically: a
stratified sample of 200 can be worse than one of 100) and saves seconds on sets of this size.
Inside `mace_run_train` the pass is a small share of one epoch (benchmarks/mp_scale.py), so
`mace_run_train` reads every config; `--max-configs` stays in `mace-e0` and `reestimate_e0s`, where
a giant file is the whole job and a fixed cost is worth tens of meV.
""")


if __name__ == "__main__":
    main()
