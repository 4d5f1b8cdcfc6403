"""Which E0s should a user pick? The same real fine-tunes run with each E0 choice over several
seeds; each saved model is scored here on a held-out test set, energies and forces.

    python benchmarks/e0_strategies.py                      # naive recipe, 4 cases x 5-7 cells x seeds 1 2 3
    python benchmarks/e0_strategies.py --recipe multihead   # the two xTB cases (ecemc, ethmeth)
    python benchmarks/e0_strategies.py --report-only        # rebuild the tables and figure from the cache
    python benchmarks/e0_strategies.py --dry-run            # smoke test: 12/4/6 configs, 1 epoch, seed 1

The full naive run is 72 fine-tunes of 6 epochs: about 1.8-1.9 h on a quiet 2-core machine (AMD EPYC,
torch 2.13 CPU; per run 15 s for ethmeth to 4 min for nacl, QUIET_SECONDS), and much longer when
other work shares the cores. It can be stopped (Ctrl-C) and started again with the same command:
finished runs are kept in a cache (default ~/.cache/mace-e0-plugin/e0_strategies/runs/cache.jsonl,
--cache/--workdir to move it), the run that was cut short starts over. Multihead adds 36 runs, ~0.4 h.

Cases (a real pretrained model fine-tuned on a real second level of theory, ../shared), with one
seeded train/valid/test split each (split seed 0), written once into the run folder and passed to
every run as --train_file/--valid_file; only mace's --seed varies between seeds:

- ecemc: mace01_cho_xtb.model (GFN2-xTB) -> ecemc-dft/ECEMC.xyz (DFT, energies only: --forces_weight
  0 and F is n/a), 120/30/50 of its 200 frames; its 3 IsolatedAtom frames are the isolated atoms.
- caco3: mace_spice_15el.model (SPICE) -> caco3-water at revPBE0-D3, every frame CaCO3 + 98 H2O
  (rank 1 of 4), 30/10/10 frames of the 50-frame file (the 30-frame file is its first 30 frames,
  so it cannot serve as a separate test set). No isolated atoms.
- nacl: mace_spice_15el.model -> nacl-water/revPBE0-D3_gen3.extxyz (NaCl in water, ~190 atoms,
  rank 2 of 4), 90/20/40 of 150 frames. No isolated atoms.
- ethmeth: mace01_cho_xtb.model -> ethanol-methanol-pbe (PBE, rank 2 of 3): 300 train / 100 valid
  from train_eth_meth.xyz, 200 test from test_eth_meth.xyz; the isolated atoms are the H, C, O
  frames of isolated_atoms.xyz (its N is not in the data).

Cells (E0 choices): mace's own `foundation`, `average` and `estimated`; `isolated` (no --E0s, the
IsolatedAtom frames appended to the training file: mace's default when they are there; ecemc and
ethmeth only); `linear_system` with --E0s_prior=foundation and the default refit (final);
`ls-norefit`, the same with --E0s_refit=none; `ls-isolated`, linear_system with the isolated
atoms as prior (--E0s_prior=isolated.xyz; ecemc and ethmeth only). mace 0.3.16 takes the training
file's IsolatedAtom frames as E0s whatever --E0s says, so every cell but `isolated` trains on the
file without them: all cells train on exactly the same configs. Each run's log is checked for the
E0s mace started from and the linear_system report for its prior (`E0 check`). `estimated` gets
the foundation cast to float32 where it is float64 (FOUNDATION_COPY: mace 0.3.16 fails otherwise).

Recipes (float32, --device cpu, --plot False, batch size 10, 5 for caco3, 6 epochs):
- naive: mace_run_train --foundation_model=<model> --multiheads_finetuning=False --lr=0.01
- multihead (xTB foundation only, since the replay file is at its level):
  --multiheads_finetuning=True --pt_train_file=../shared/data/solvent-xtb/solvent_train.xyz. mace
  then sets lr=1e-4 and EMA (decay 0.99999) itself, gives pt_head the foundation's E0s, applies
  --E0s to the fine-tuning head `Default` only, and refuses --E0s=average (that cell is skipped).
  ecemc runs without --forces_weight=0 there: its frames have no forces, so their force weight is
  0 anyway, and the flag would also switch off pt_head's forces.

Per run (a cache line, keyed by recipe, case, choice and seed, with the settings it must match to
be reused; run_one): the test-set E and F RMSE of {work_dir}/ft.model with its own E0s, computed
here; mace's "Initial" validation errors; mace_run_train's wall and CPU time, its epochs' seconds
and the other processes' load; the E0s mace started from and those saved; for linear_system the
report's rank, prior, RMSEs and final refits. Results go to the `e0_strategies` section of
benchmarks/RESULTS.md (`e0_strategies-multihead` for that recipe) and benchmarks/e0_strategies.png
(-multihead.png); --dry-run and --no-record print them instead.
"""

import argparse
import ast
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import (HEAD, HERE, RUN_NAME, command_line, epoch_stamps, evaluate, finetune_args, fmt, frames,
                     initial_errors, linear_system_report, load_model, model_e0s, pyplot, record, seeded_subsets,
                     shared, timed_run)

DEFAULT_WORKDIR = Path.home() / ".cache" / "mace-e0-plugin" / "e0_strategies"
DEFAULT_EPOCHS = 6  # the issue measured 4; 6 as in refit.py, and the full naive run stays near 2 h
DEFAULT_SEEDS = (1, 2, 3)
SPLIT_SEED = 0
LEARNING_RATE = "0.01"
DTYPE = "float32"
PT_TRAIN_FILE = ("solvent-xtb", "solvent_train.xyz")
DRY_SIZES = (12, 4, 6)  # train, valid, test configs in --dry-run
DRY_EPOCHS = 1
E0_TOLERANCE_EV = 1e-5
MIN_SEEDS_FOR_VERDICT = 2  # a spread needs two seeds
OFF_SCALE = 2.0  # the figure's F axis ends at this many times the best cell's mean force error
# Seconds of one run (fixed part, per epoch) at the default sizes on a quiet 2-core AMD EPYC (torch 2.13
# CPU, mace 0.3.16), measured with linear_system, seed 1: the estimate printed before anything has run.
# Other work on the same cores slows mace down far more than 2x (a 10 s run took 178 s under a test suite).
QUIET_SECONDS = {"naive": {"ecemc": (18, 7), "caco3": (22, 14), "nacl": (30, 33), "ethmeth": (8, 2)},
                 "multihead": {"ecemc": (18, 7.5), "ethmeth": (13, 2)}}


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    source: tuple  # ../shared/data parts of the file train/valid (and test, without test_source) come from
    energy_key: str
    forces_key: str  # None: the data have no forces
    sizes: tuple  # (train, valid, test) configs
    batch_size: int
    valid_batch_size: int
    test_source: tuple = None
    isolated_source: tuple = None  # a file whose IsolatedAtom frames are the isolated atoms
    multihead: bool = False  # the foundation's level matches the replay file (xTB)


CASES = {
    "ecemc": Case("GFN2-xTB -> DFT, ECEMC (energies only)", "mace01_cho_xtb.model", ("ecemc-dft", "ECEMC.xyz"),
                  "REF_energy", None, (120, 30, 50), 10, 10, isolated_source=("ecemc-dft", "ECEMC.xyz"),
                  multihead=True),
    "caco3": Case("SPICE -> revPBE0-D3, CaCO3(H2O)98", "mace_spice_15el.model",
                  ("caco3-water", "training_set_50_revPBE0_D3.xyz"), "rPBE0D3_energy", "rPBE0D3_forces",
                  (30, 10, 10), 5, 5),
    "nacl": Case("SPICE -> revPBE0-D3, NaCl in water", "mace_spice_15el.model",
                 ("nacl-water", "revPBE0-D3_gen3.extxyz"), "energy_ref", "forces_ref", (90, 20, 40), 10, 10),
    "ethmeth": Case("GFN2-xTB -> PBE, ethanol + methanol", "mace01_cho_xtb.model",
                    ("ethanol-methanol-pbe", "train_eth_meth.xyz"), "REF_energy", "REF_forces", (300, 100, 200),
                    10, 50, test_source=("ethanol-methanol-pbe", "test_eth_meth.xyz"),
                    isolated_source=("ethanol-methanol-pbe", "isolated_atoms.xyz"), multihead=True),
}


@dataclass(frozen=True)
class Choice:
    label: str
    flags: tuple  # "{isolated}" stands for the case's file of isolated atoms
    isolated_frames: bool = False  # the training file keeps the IsolatedAtom frames
    needs_isolated: bool = False
    multihead: bool = True  # mace accepts it in multihead fine-tuning
    expect: str = None  # what mace's starting E0s must equal: "foundation", "isolated" or None
    foundation_in_dtype: bool = False  # give mace a copy of the foundation cast to DTYPE (see FOUNDATION_COPY)
    prior: str = None  # linear_system: the prior kind its report must name


CHOICES = {
    "foundation": Choice("the foundation's E0s", ("--E0s", "foundation"), expect="foundation"),
    "average": Choice("mace's least-squares fit of the training energies", ("--E0s", "average"), multihead=False),
    "estimated": Choice("mace's fit of the foundation's errors", ("--E0s", "estimated"), foundation_in_dtype=True),
    "isolated": Choice("the isolated atoms' energies, their frames in the training file and no --E0s", (),
                       isolated_frames=True, needs_isolated=True, expect="isolated"),
    "linear_system": Choice("the plugin, foundation prior, final refit (its default)",
                            ("--E0s", "linear_system", "--E0s_prior", "foundation"), expect="foundation",
                            prior="foundation"),
    "ls-norefit": Choice("the plugin without refit",
                         ("--E0s", "linear_system", "--E0s_prior", "foundation", "--E0s_refit", "none"),
                         expect="foundation", prior="foundation"),
    "ls-isolated": Choice("the plugin, isolated atoms as prior",
                          ("--E0s", "linear_system", "--E0s_prior", "{isolated}"), needs_isolated=True,
                          expect="foundation", prior="isolated_atoms"),
}
# mace 0.3.16's --E0s=estimated runs the foundation as loaded over data in --default_dtype, so a
# float64 foundation (mace01_cho_xtb) under float32 stops with "both inputs should have same dtype".
# That cell gets the foundation cast to DTYPE: training is unchanged (mace copies the foundation's
# weights into a DTYPE model either way); only the foundation's E0s are rounded to DTYPE.
FOUNDATION_COPY = "{stem}-{dtype}.model"
MACE_CHOICES = ("foundation", "average", "estimated", "isolated")  # what linear_system is compared against
RECIPES = ("naive", "multihead")


# ---------------------------------------------------------------- splits


@dataclass
class Split:
    train: Path
    train_isolated: Path  # the training file plus the isolated atoms
    valid: Path
    isolated: Path  # None without isolated atoms
    test_configs: list = field(repr=False)
    isolated_e0s: dict = None  # {Z: eV}


def write_split(case: Case, sizes, folder: Path) -> Split:
    """The case's one seeded split (the same whatever mace's seed), written to folder."""
    import ase.io

    n_train, n_valid, n_test = sizes
    if case.test_source:
        train, valid = seeded_subsets(frames(case.source), (n_train, n_valid), SPLIT_SEED)
        (test,) = seeded_subsets(frames(case.test_source), (n_test,), SPLIT_SEED)
    else:
        train, valid, test = seeded_subsets(frames(case.source), (n_train, n_valid, n_test), SPLIT_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.xyz" for name in ("train", "train_isolated", "valid", "test", "isolated")}
    for name, configs in (("train", train), ("valid", valid), ("test", test)):
        ase.io.write(paths[name], configs, format="extxyz")
    isolated, isolated_e0s = None, None
    if case.isolated_source:
        present = {int(z) for a in train + valid for z in a.numbers}
        atoms = [a for a in frames(case.isolated_source, isolated=True) if int(a.numbers[0]) in present]
        isolated_e0s = {int(a.numbers[0]): float(a.info[case.energy_key]) for a in atoms}
        ase.io.write(paths["isolated"], atoms, format="extxyz")
        ase.io.write(paths["train_isolated"], train + atoms, format="extxyz")
        isolated = paths["isolated"]
    return Split(paths["train"], paths["train_isolated"], paths["valid"], isolated, test, isolated_e0s)


# ---------------------------------------------------------------- one run


def settings_of(case: Case, sizes, epochs: int) -> dict:
    """What a cached result must match to be reused."""
    return {"sizes": list(sizes), "epochs": epochs, "batch_size": case.batch_size, "lr": LEARNING_RATE,
            "dtype": DTYPE, "split_seed": SPLIT_SEED}


def cells(recipe: str, case_names, choice_names):
    """(case, choice) pairs that apply to a recipe."""
    for case_name in case_names:
        case = CASES[case_name]
        if recipe == "multihead" and not case.multihead:
            continue
        for choice_name in choice_names:
            choice = CHOICES[choice_name]
            if (choice.needs_isolated and not case.isolated_source) or (recipe == "multihead" and not choice.multihead):
                continue
            yield case_name, choice_name


def foundation_for(case: Case, choice: Choice, folder: Path) -> Path:
    """The foundation file mace gets: the shared one, or for choices that need it a copy cast to DTYPE."""
    import torch

    original = shared("models", case.model)
    if not choice.foundation_in_dtype:
        return original
    model = load_model(original)
    if next(model.parameters()).dtype == getattr(torch, DTYPE):
        return original
    copy = folder / FOUNDATION_COPY.format(stem=original.stem, dtype=DTYPE)
    if not copy.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.to(getattr(torch, DTYPE)), copy)
    return copy


def mace_argv(recipe: str, case: Case, choice: Choice, split: Split, seed: int, epochs: int, work: Path,
              foundation: Path) -> list:
    train = split.train_isolated if choice.isolated_frames else split.train
    argv = ["mace_run_train", *finetune_args(work, foundation, train, split.valid, case.energy_key, epochs=epochs,
                                             batch_size=case.batch_size, valid_batch_size=case.valid_batch_size,
                                             dtype=DTYPE, seed=seed),
            "--lr", LEARNING_RATE, "--save_cpu", "--num_workers", "0"]
    if case.forces_key:
        argv += ["--forces_key", case.forces_key]
    if recipe == "naive":
        argv += ["--multiheads_finetuning", "False"] + ([] if case.forces_key else ["--forces_weight", "0"])
    else:
        argv += ["--multiheads_finetuning", "True", "--pt_train_file", shared("data", *PT_TRAIN_FILE)]
    return argv + [str(split.isolated) if flag == "{isolated}" else flag for flag in choice.flags]


def parse_log(text: str) -> dict:
    """mace's starting E0s, its "Initial" validation errors for the fine-tuning head, the seconds
    each epoch took (training + validation, between mace's validation lines: the fastest one is the
    machine's quiet rate when other work shares the cores), and a skipped refit's warning."""
    stamps = epoch_stamps(text)
    out = {"epoch_s": [round(b - a, 2) for a, b in zip(stamps, stamps[1:])], "mace_e0s": None}
    out["initial_e"], out["initial_f"] = initial_errors(text)
    used = re.search(rf"Atomic Energies used \(z: eV\) for head {HEAD}: (\{{.*?\}})", text)
    if used:
        out["mace_e0s"] = {int(z): float(e) for z, e in ast.literal_eval(used.group(1)).items()}
    skipped = re.search(r"^\S+ \S+ (?:WARNING|ERROR): (.*refit.*(?:skipped|failed).*)$", text, re.M)
    out["refit_skipped"] = skipped.group(1) if skipped else None
    return out


def same_e0s(a: dict, b: dict) -> bool:
    return bool(a) and bool(b) and set(a) <= set(b) and all(abs(a[z] - b[z]) <= E0_TOLERANCE_EV for z in a)


def e0_check(choice: Choice, used: dict, foundation: dict, isolated: dict, facts: dict) -> str:
    """'ok', or what is wrong with the E0s mace started from (the IsolatedAtom trap among others; the
    plugin builds the model with the foundation's E0s, then re-estimates them) or with the prior."""
    if choice.prior and facts.get("prior") != choice.prior:
        return f"expected the prior {choice.prior}, the linear_system report says {facts.get('prior')}"
    if not used:
        return "no 'Atomic Energies used' line for the head in mace's log"
    if choice.expect == "foundation" and not same_e0s(used, foundation):
        return f"expected the foundation's E0s, mace used {used}"
    if choice.expect == "isolated" and not same_e0s(used, isolated):
        return f"expected the isolated atoms' E0s, mace used {used}"
    if choice.expect != "isolated" and isolated and same_e0s(used, isolated):
        return "mace used the isolated atoms' E0s (IsolatedAtom frames in the training file?)"
    return "ok"


def linear_system_facts(work: Path) -> dict:
    """What the report tells of the first estimate (rank, prior, RMSEs) and how many final refits it made."""
    report = linear_system_report(work)
    if not report:
        return {}
    head = report["heads"][HEAD]
    return {"rank": head["rank"], "n_elements": head["n_elements"], "prior": head.get("prior", {}).get("kind"),
            "rmse_before": head["rmse_per_atom_before_meV"], "rmse_after": head["rmse_per_atom_after_meV"],
            "final_refits": sum(r.get("kind") == "final" and r.get("head", HEAD) == HEAD
                                for r in report.get("refits", []))}


def run_one(recipe, case_name, choice_name, seed, split: Split, epochs, run_root: Path,
            foundation_e0s: dict) -> dict:
    case, choice = CASES[case_name], CHOICES[choice_name]
    work = run_root / recipe / case_name / choice_name / f"seed{seed}"
    shutil.rmtree(work, ignore_errors=True)  # a killed run starts over
    work.mkdir(parents=True)
    argv = mace_argv(recipe, case, choice, split, seed, epochs, work,
                     foundation_for(case, choice, run_root / "foundations"))
    started = time.perf_counter()
    wall, cpu, others = timed_run(argv, f"mace_run_train ({recipe}, {case_name}, {choice_name}, seed {seed})")
    log = parse_log((work / "logs" / f"{RUN_NAME}_run-{seed}.log").read_text())
    saved = work / f"{RUN_NAME}.model"
    test_e, test_f, _ = evaluate(saved, split.test_configs, case.energy_key, case.forces_key, "cpu",
                                 case.valid_batch_size, forces=case.forces_key is not None, head=HEAD)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the saved .model stays
    facts = linear_system_facts(work)
    return {"recipe": recipe, "case": case_name, "choice": choice_name, "seed": seed,
            "test_e": test_e, "test_f": test_f, "initial_e": log["initial_e"], "initial_f": log["initial_f"],
            "wall_s": wall, "cpu_s": cpu, "others_share": others, "total_s": time.perf_counter() - started,
            "epoch_s": log["epoch_s"], "refit_skipped": log["refit_skipped"],
            "mace_e0s": log["mace_e0s"], "saved_e0s": model_e0s(saved),
            "e0_check": e0_check(choice, log["mace_e0s"], foundation_e0s, split.isolated_e0s, facts),
            "linear_system": facts, "work": str(work), "command": " ".join(map(str, argv))}


# ---------------------------------------------------------------- cache


def cache_key(recipe, case, choice, seed) -> str:
    return f"{recipe}|{case}|{choice}|{seed}"


def load_cache(path: Path) -> dict:
    """The last entry per key; a line cut short by a kill is skipped."""
    entries = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[cache_key(entry["recipe"], entry["case"], entry["choice"], entry["seed"])] = entry
    return entries


def append_cache(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- summaries


def spread(values):
    """(mean, max - min, min, max) of the finite values; nans without any."""
    values = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(values):
        return (float("nan"),) * 4
    return float(values.mean()), float(values.max() - values.min()), float(values.min()), float(values.max())


def pm(values, spec=".2f") -> str:
    mean, width, _, _ = spread(values)
    return "n/a" if np.isnan(mean) else f"{format(mean, spec)} ± {format(width, spec)}"


def table(case_name: str, rows: dict) -> str:
    """rows: choice -> cached entries (one per seed)."""
    lines = ["| E0s | test E / meV/atom | test F / meV/A | initial E / meV/atom | initial F / meV/A | "
             "wall / s | seeds |", "|---|---|---|---|---|---|---|"]
    for choice_name, entries in rows.items():
        mean = {key: spread([e[key] for e in entries])[0] for key in ("initial_e", "initial_f", "wall_s")}
        initial_f = "n/a" if CASES[case_name].forces_key is None else fmt(mean["initial_f"], ".1f")
        test_e, test_f = pm([e["test_e"] for e in entries]), pm([e["test_f"] for e in entries], ".1f")
        lines.append(f"| {choice_name} | {test_e} | {test_f} | {fmt(mean['initial_e'], '.2f')} | {initial_f} | "
                     f"{fmt(mean['wall_s'], '.0f')} | {len(entries)} |")
    return "\n".join(lines)


def e0_table(rows: dict) -> str:
    """The E0s mace started from and those of the saved model, per choice (first seed)."""
    from ase.data import chemical_symbols

    elements = sorted({int(z) for entries in rows.values() for z in entries[0]["saved_e0s"]})
    seed = next(iter(rows.values()))[0]["seed"]
    lines = [f"| E0s / eV, seed {seed}: mace's start -> saved | " + " | ".join(chemical_symbols[z] for z in elements)
             + " |", "|---|" + "---|" * len(elements)]
    for choice_name, entries in rows.items():
        used, saved = entries[0].get("mace_e0s") or {}, entries[0]["saved_e0s"]
        lines.append(f"| {choice_name} | " + " | ".join(
            f"{fmt(used.get(str(z), float('nan')), '.3f')} -> {fmt(saved.get(str(z), float('nan')), '.3f')}"
            for z in elements) + " |")
    return "\n".join(lines)


def verdicts(rows: dict, metric: str, reference: str = "linear_system") -> list:
    """linear_system against each of mace's choices on one metric: worse / better beyond the seed
    spread (its best seed worse than the other's worst, or the reverse), else overlapping."""
    if reference not in rows or len(rows[reference]) < MIN_SEEDS_FOR_VERDICT:
        return []
    mine = spread([e[metric] for e in rows[reference]])
    out = []
    for other in MACE_CHOICES:
        if other not in rows or len(rows[other]) < MIN_SEEDS_FOR_VERDICT:
            continue
        theirs = spread([e[metric] for e in rows[other]])
        if np.isnan(mine[0]) or np.isnan(theirs[0]):
            continue
        if mine[2] > theirs[3]:
            word = "worse"
        elif mine[3] < theirs[2]:
            word = "better"
        else:
            word = "overlap"
        out.append((word, other, mine[0], theirs[0]))
    return out


def where_no_help(case_name: str, rows: dict) -> str:
    """One line: linear_system (the default) against each of mace's choices, test E and test F:
    better or worse beyond the seed spread, or within it. 'Does not help' = not better."""
    parts, no_help = [], []
    for metric, name in (("test_e", "test E"), ("test_f", "test F")):
        found = verdicts(rows, metric)
        if not found:
            continue
        said = []
        for word, text in (("better", "better than"), ("overlap", "within the seed spread of"), ("worse", "WORSE than")):
            others = [f"{other} ({theirs:.2f})" for verdict, other, _, theirs in found if verdict == word]
            if others:
                said.append(f"{text} {', '.join(others)}")
        mine = found[0][2]
        parts.append(f"{name} {mine:.2f}: " + "; ".join(said))
        no_help += [f"{name} vs {other}" for verdict, other, _, _ in found if verdict != "better"]
    if not parts:
        return f"linear_system against mace's choices ({case_name}): not judged (under {MIN_SEEDS_FOR_VERDICT} seeds)."
    return (f"linear_system against mace's choices ({case_name}; means in brackets; better or worse: every seed "
            "beyond every seed of the other): " + ". ".join(parts) + ". "
            + (f"Where it does not help: {', '.join(no_help)}." if no_help else "It helps on both, everywhere."))


def e0_checks(rows: dict) -> str:
    failed = [f"{e['choice']} seed {e['seed']}: {e['e0_check']}" for entries in rows.values() for e in entries
              if e.get("e0_check") != "ok"]
    return ("E0 check: mace started from the expected E0s in every run (foundation and the linear_system cells: "
            "the foundation's; isolated: the file's isolated atoms; no other cell from the isolated atoms), and "
            "every linear_system report names the prior asked for."
            if not failed else "E0 check FAILED: " + "; ".join(failed))


def refit_note(rows: dict) -> str:
    """Did linear_system's final refit happen in every run? (The plugin skips it, with a warning, when
    a check fails; the saved model then keeps the first estimate, as ls-norefit.)"""
    entries = rows.get("linear_system", [])
    skipped = [e for e in entries if e.get("refit_skipped") or not e.get("linear_system", {}).get("final_refits")]
    if not skipped:
        return ""
    reasons = sorted({(e.get("refit_skipped") or "no final refit in the report").split("; kept:")[0][:300]
                      for e in skipped})
    return (f"**linear_system's final refit did not happen in {len(skipped)} of {len(entries)} runs** "
            f"(seeds {', '.join(str(e['seed']) for e in skipped)}): " + "; ".join(reasons))


def rank_note(rows: dict) -> str:
    facts = [e["linear_system"] for entries in rows.values() for e in entries if e.get("linear_system")]
    if not facts:
        return ""
    first = facts[0]
    return (f"linear_system report: rank {first['rank']} of {first['n_elements']}; training E RMSE before -> after "
            f"the first estimate {first['rmse_before']:.1f} -> {first['rmse_after']:.2f} meV/atom.")


def figure(results: dict, path: Path, title: str) -> None:
    plt = pyplot()
    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.4), squeeze=False)
    colours = {name: f"C{i}" for i, name in enumerate(CHOICES)}
    markers = dict(zip(CHOICES, "osD^vPX"))  # overlapping means (same E0s, same training) stay visible
    for ax, case_name in zip(axes[0], names):
        rows = results[case_name]
        has_forces = CASES[case_name].forces_key is not None
        # A cell whose forces blew up (the foundation's E0s, hundreds of eV/atom off) would squeeze the
        # rest into one pixel: the axis ends at OFF_SCALE times the best mean, and such a cell sits at
        # its edge, with its value written beside it.
        best = min(np.mean([x["test_f"] for x in entries]) for entries in rows.values()) if has_forces else None
        edge = OFF_SCALE * best if has_forces else None
        for i, (choice_name, entries) in enumerate(rows.items()):
            e = [x["test_e"] for x in entries]
            x = [x["test_f"] for x in entries] if has_forces else [i] * len(entries)
            off = has_forces and np.mean(x) > edge
            if off:
                ax.annotate(f"{choice_name}: F {np.mean(x):,.0f}", (edge, np.mean(e)), fontsize=7, ha="right",
                            xytext=(-8, 6), textcoords="offset points")
                x = [edge] * len(x)
            ax.scatter(x, e, s=14, color=colours[choice_name], marker=markers[choice_name], alpha=0.6)
            ax.scatter([np.mean(x)], [np.mean(e)], s=110, color=colours[choice_name],
                       marker=">" if off else markers[choice_name], edgecolor="k", alpha=0.8, label=choice_name)
        if has_forces:
            ax.set_xlim(0.7 * best, edge * 1.05)
        ax.set_yscale("log")
        ax.set_ylabel("test E RMSE / meV/atom")
        if has_forces:
            ax.set_xlabel("test F RMSE / meV/A")
        else:
            ax.set_xticks(range(len(rows)), list(rows), rotation=30, fontsize=7)
            ax.set_xlabel("E0s (no forces in these data)")
        ax.set_title(f"{case_name}: {CASES[case_name].label}", fontsize=9)
        ax.grid(which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="center right", fontsize=8, title="E0s\n(big: mean,\nsmall: seeds)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- driver


def sizes_for(case: Case, args) -> tuple:
    return DRY_SIZES if args.dry_run else case.sizes


def planned(args):
    return [(args.recipe, case, choice, seed) for seed in args.seeds
            for case, choice in cells(args.recipe, args.cases, args.choices)]


def matching(entry: dict, args) -> bool:
    case = CASES[entry["case"]]
    return entry.get("settings") == settings_of(case, sizes_for(case, args), args.epochs)


def quiet_estimate(recipe: str, case_name: str, epochs: int) -> float:
    fixed, per_epoch = QUIET_SECONDS[recipe][case_name]
    return fixed + per_epoch * epochs


def eta(todo, done_entries, epochs: int) -> float:
    """Seconds for the runs left: the mean of finished runs of the same recipe and case, else the
    quiet-machine estimate."""
    times = {}
    for entry in done_entries:
        times.setdefault((entry["recipe"], entry["case"]), []).append(entry["total_s"])
    return sum(float(np.mean(times[(recipe, case)])) if (recipe, case) in times else
               quiet_estimate(recipe, case, epochs) for recipe, case, _, _ in todo)


def not_applicable(args) -> list:
    applicable = set(cells(args.recipe, args.cases, args.choices))
    return [f"{case}/{choice}" for case in args.cases for choice in args.choices if (case, choice) not in applicable]


def run_all(args, cache_path: Path, run_root: Path) -> None:
    if not_applicable(args):
        print(f"not run ({args.recipe} recipe, no isolated atoms, or refused by mace): "
              + ", ".join(not_applicable(args)))
    entries = load_cache(cache_path)
    todo = [key for key in planned(args)
            if not (cache_key(*key) in entries and matching(entries[cache_key(*key)], args))]
    print(f"{len(planned(args)) - len(todo)} runs cached in {cache_path}, {len(todo)} to run"
          + ("" if args.dry_run else f", about {eta(todo, [], args.epochs) / 3600:.1f} h on a quiet machine"),
          flush=True)
    splits, foundations = {}, {}
    while todo:
        recipe, case_name, choice_name, seed = key = todo.pop(0)
        case = CASES[case_name]
        if case_name not in splits:
            splits[case_name] = write_split(case, sizes_for(case, args), run_root / "splits" / case_name)
        if case.model not in foundations:
            foundations[case.model] = model_e0s(shared("models", case.model))
        entry = run_one(recipe, case_name, choice_name, seed, splits[case_name], args.epochs, run_root,
                        foundations[case.model])
        entry["settings"] = settings_of(case, sizes_for(case, args), args.epochs)
        entry = json.loads(json.dumps(entry))  # as the cache will give it back (string keys)
        append_cache(cache_path, entry)
        entries[cache_key(*key)] = entry
        left = eta(todo, [e for e in entries.values() if matching(e, args)], args.epochs)
        flag = "" if entry["e0_check"] == "ok" else f"  E0 CHECK: {entry['e0_check']}"
        print(f"{case_name:8s} {choice_name:14s} seed {seed}: test E {entry['test_e']:9.2f} meV/atom, "
              f"F {fmt(entry['test_f'], '7.1f')} meV/A, initial E {entry['initial_e']:10.2f}, "
              f"wall {entry['wall_s']:6.0f} s (other work {100 * entry['others_share']:3.0f}% of the cores) | "
              f"{len(todo)} left, ETA {left / 60:.0f} min{flag}", flush=True)


def collect(args, cache_path: Path) -> dict:
    """case -> choice -> entries over seeds, in the order of --cases and --choices."""
    entries = [e for e in load_cache(cache_path).values() if matching(e, args)]
    results = {}
    for recipe, case_name, choice_name, seed in planned(args):
        found = [e for e in entries if (e["recipe"], e["case"], e["choice"], e["seed"]) ==
                 (recipe, case_name, choice_name, seed)]
        if found:
            results.setdefault(case_name, {}).setdefault(choice_name, []).append(found[0])
    return results


def report(args, parser, cache_path: Path) -> None:
    results = collect(args, cache_path)
    if not results:
        others = {json.dumps(e.get("settings")) for e in load_cache(cache_path).values()}
        sys.exit(f"nothing in {cache_path} matches these settings; it holds: {', '.join(others) or 'nothing'}")
    label = "e0_strategies" if args.recipe == "naive" else "e0_strategies-multihead"
    picture = (run_dir(args) if args.dry_run or args.no_record else HERE) / f"{label}.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    figure(results, picture, f"{args.recipe} fine-tunes, {args.epochs} epochs: saved model on the test set")
    sections = []
    for case_name, rows in results.items():
        case = CASES[case_name]
        n_train, n_valid, n_test = sizes_for(case, args)
        source = "/".join(case.source) + (f", test from {'/'.join(case.test_source)}" if case.test_source else "")
        sections.append("\n\n".join(filter(None, [
            f"### {case_name}: {case.label}",
            f"{case.model}; {n_train} train / {n_valid} valid / {n_test} test configs of {source}; "
            f"batch size {case.batch_size}. {rank_note(rows)}",
            table(case_name, rows), where_no_help(case_name, rows), refit_note(rows), e0_checks(rows),
            e0_table(rows)])))
    recipe_text = ("naive (`--multiheads_finetuning=False --lr=0.01`)" if args.recipe == "naive" else
                   "multihead (`--multiheads_finetuning=True --pt_train_file=../shared/data/solvent-xtb/"
                   "solvent_train.xyz`; mace sets lr 1e-4 and EMA itself)")
    body = f"""
Which E0s to pick: `mace_run_train` fine-tunes, recipe {recipe_text}, {args.epochs} epoch(s), {DTYPE}, CPU,
mace seeds {' '.join(map(str, args.seeds))}, one fixed split per case (split seed {SPLIT_SEED}). Errors are
those of the saved `ft.model` with its own E0s on the held-out test set, computed by this script; "initial"
is mace's validation error before the first epoch (its log). Values are the mean ± the spread (max - min)
over seeds; wall is the `mace_run_train` process, mean over seeds. {time_note(results)}
Cells: {cells_legend()}. All cells but `isolated` train on the same configs (no IsolatedAtom
frames). Figure: `benchmarks/{label}.png`.

""" + "\n\n".join(sections)
    if args.dry_run or args.no_record:
        print(body)
        print(f"(RESULTS.md not written; figure {picture})")
    else:
        record(label, command_line("e0_strategies.py", parser, args,
                                   skip=("workdir", "cache", "dry_run", "report_only", "no_record")), body)


def cells_legend() -> str:
    return "; ".join(f"`{name}`: {choice.label}" + (f" (`{' '.join(choice.flags)}`)" if choice.flags else "")
                     for name, choice in CHOICES.items()).replace("{isolated}", "isolated.xyz")


def time_note(results: dict) -> str:
    entries = [e for rows in results.values() for entries in rows.values() for e in entries]
    hours = sum(e["total_s"] for e in entries) / 3600
    return f"{hours:.2f} h for these {len(entries)} runs (training and scoring). {load_note(entries)}".strip()


def load_note(entries: list) -> str:
    """How much other work shared the cores: the CPU other processes used during each mace_run_train,
    as a share of all cores, and the mean over fastest epoch within a run (near 1 on a quiet machine)."""
    shares = [e["others_share"] for e in entries if np.isfinite(e.get("others_share", float("nan")))]
    ratios = [np.mean(e["epoch_s"]) / min(e["epoch_s"]) for e in entries if e.get("epoch_s")]
    if not shares or not ratios:
        return ""
    return (f"Other processes used {100 * min(shares):.0f}-{100 * max(shares):.0f}% (median "
            f"{100 * np.median(shares):.0f}%) of the {os.cpu_count()} cores during the runs; mean / fastest epoch "
            f"within a run {min(ratios):.2f}-{max(ratios):.2f}: wall times of runs that shared the cores are "
            "inflated, often far more than the share suggests (two torch processes on 2 cores thrash).")


def run_dir(args) -> Path:
    return args.workdir / ("dry-run" if args.dry_run else "runs")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="naive", choices=RECIPES)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--choices", nargs="+", default=list(CHOICES), choices=list(CHOICES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help="run folders and splits (not committed); default %(default)s")
    parser.add_argument("--cache", type=Path, help="JSON-lines cache of finished runs (default: in --workdir)")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"smoke test: {DRY_SIZES} train/valid/test configs, {DRY_EPOCHS} epoch, the first seed; "
                             "does not write RESULTS.md")
    parser.add_argument("--report-only", action="store_true", help="rebuild the tables and figure from the cache")
    parser.add_argument("--no-record", action="store_true",
                        help="print the tables, leave RESULTS.md and benchmarks/*.png alone (timing or partial runs)")
    args = parser.parse_args()
    if args.dry_run:
        args.epochs, args.seeds = DRY_EPOCHS, args.seeds[:1]
    if args.recipe == "multihead" and args.cases == list(CASES):
        args.cases = [name for name, case in CASES.items() if case.multihead]
    cache_path = args.cache or run_dir(args) / "cache.jsonl"
    if not args.report_only:
        run_all(args, cache_path, run_dir(args))
    report(args, parser, cache_path)


if __name__ == "__main__":
    main()
