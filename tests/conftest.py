"""Shared fixtures: a tiny foundation model built here (nothing downloaded), planted data, and an
in-process ``mace_run_train`` that leaves the interpreter as it found it."""

import contextlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import mace  # noqa: F401  (first: it lets e3nn's torch.load work with torch>=2.6)
import ase.io
import pytest
import torch

from mace_e0_plugin import testing as synthetic

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path in ../shared, or skip: the real models and data live beside the project only."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/{'/'.join(parts)} is absent (real models and data are not part of the project)")
    return path


@dataclass
class Foundation:
    path: Path
    model: torch.nn.Module
    e0s: Dict[int, float]


@pytest.fixture(scope="session")
def foundation(tmp_path_factory) -> Foundation:
    """A tiny random-weight ScaleShiftMACE over H, C, O with the toy level A's E0s."""
    model = synthetic.build_foundation(synthetic.LEVEL_A.e0s, seed=7)
    path = tmp_path_factory.mktemp("foundation") / "foundation.model"
    torch.save(model, path)
    return Foundation(path=path, model=model, e0s=dict(synthetic.LEVEL_A.e0s))


SHIFTS = {1: -0.35, 6: 1.25, 8: -0.8}


def planted_configs(foundation: Foundation, n_configs: int, seed: int, shifts=None, **kwargs) -> List:
    """Configs whose reference energies are the foundation's predictions plus known E0 shifts
    (forces from the toy level: they do not enter the E0 estimate)."""
    configs = synthetic.random_configs(n_configs, seed=seed, **kwargs)
    synthetic.label(configs, synthetic.LEVEL_B)
    synthetic.PlantedShift(shifts or SHIFTS).apply(foundation.model, configs)
    return configs


NOISE_PER_ATOM = 0.02  # eV per atom: enough that a fit on part of the data differs from the whole's


def add_noise(configs, seed: int, per_atom: float = NOISE_PER_ATOM, key: str = "REF_energy"):
    """Reference energies with Gaussian noise of ``per_atom`` x N eV (in place): on noisy data a
    fit that misses configs, or weights them otherwise, gives other E0s."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for atoms in configs:
        atoms.info[key] += per_atom * len(atoms) * rng.standard_normal()
    return configs


def closed_form_e0s(model, configs, weighting: str, key: str = "REF_energy", head=None):
    """The weighted least-squares E0s of ``model`` on ``configs`` (full rank), with NumPy, from the
    model's own energies: E0 + lstsq(sqrt(w) A, sqrt(w) (E_ref - E_pred)), w = 1/N^2 or 1."""
    import numpy as np

    from mace_e0_plugin.glue import model_atomic_numbers, model_heads, read_e0s

    elements = model_atomic_numbers(model)
    heads = model_heads(model)
    index = heads.index(head) if head else 0
    predicted = np.array(synthetic.predict_energies(model, configs, head=head))
    reference = np.array([a.info[key] for a in configs])
    counts = np.array([[np.sum(a.numbers == z) for z in elements] for a in configs], dtype=float)
    n_atoms = counts.sum(axis=1)
    weights = 1.0 / n_atoms ** 2 if weighting == "per_atom" else np.ones(len(configs))
    root = np.sqrt(weights)
    x = np.linalg.lstsq(counts * root[:, None], (reference - predicted) * root, rcond=None)[0]
    return dict(zip(elements, np.array(read_e0s(model, index)) + x))


def write_xyz(path: Path, configs) -> Path:
    ase.io.write(path, configs, format="extxyz")
    return path


@pytest.fixture
def planted_train(foundation, tmp_path) -> Path:
    return write_xyz(tmp_path / "train.xyz", planted_configs(foundation, 40, seed=11))


def finetune_argv(foundation: Foundation, train_file: Path, work_dir: Path, *extra: str,
                  plugin: bool = True) -> List[str]:
    """mace_run_train's arguments; ``plugin=False`` leaves out the plugin's options, for runs
    of mace without it."""
    # --E0s_refit none: the first estimate alone; the tests of refits say which they want.
    # --E0s_dtype float64: exact recovery of planted shifts (the float32 default has its own tests).
    options = (["--E0s", "linear_system", "--E0s_refit", "none", "--E0s_dtype", "float64"] if plugin
               else ["--E0s", "linear_system"])
    return [
        "--name", "ft", "--work_dir", str(work_dir), "--seed", "1",
        "--foundation_model", str(foundation.path), "--train_file", str(train_file),
        "--valid_fraction", "0.1", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
        "--max_num_epochs", "1", "--batch_size", "8", "--valid_batch_size", "16",
        "--device", "cpu", "--default_dtype", "float64", *options, *extra,
    ]


@contextlib.contextmanager
def mace_globals_restored():
    """Undo what a mace run in this process changes globally: default dtype and root-logger
    handlers and filters."""
    root = logging.getLogger()
    handlers, filters, level = list(root.handlers), list(root.filters), root.level
    dtype = torch.get_default_dtype()
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.filters[:] = filters
        root.setLevel(level)
        torch.set_default_dtype(dtype)


def mace_train(argv: List[str]):
    """mace_run_train in this process (seconds faster than a subprocess): mace's parser, then
    ``run(args)``, leaving the interpreter as it found it."""
    from mace import tools
    from mace.cli import run_train

    with mace_globals_restored():
        args = tools.build_default_arg_parser().parse_args(argv)
        run_train.run(args)
        return args


def report(work_dir: Path, name: str = "ft") -> dict:
    return json.loads((work_dir / "results" / f"{name}_E0s_linear_system.json").read_text())


def saved_e0s(path: Path) -> torch.Tensor:
    model = torch.load(path, map_location="cpu", weights_only=False)
    return model.atomic_energies_fn.atomic_energies.detach().double()


def expected_e0s(foundation: Foundation, shifts=None) -> torch.Tensor:
    shifts = shifts or SHIFTS
    return torch.tensor([foundation.e0s[z] + shifts[z] for z in sorted(foundation.e0s)], dtype=torch.float64)


def run_command(argv: List[str], cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)


PYTHON = sys.executable
