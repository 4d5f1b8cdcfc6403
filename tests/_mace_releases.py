"""Older mace-torch releases for tests/test_mace_releases.py, without a venv each: every mace-torch
0.3.10 to 0.3.16 wheel requires the same packages, so a release's wheel alone (pip install --no-deps
--target DIR) first on PYTHONPATH runs in this environment: ``import mace``, importlib.metadata and
the ``mace_run_train`` console script then all see that release, and this environment's start-up
watcher (mace_e0_plugin.pth) still wraps it.

Run as a script under a release's PYTHONPATH (``python tests/_mace_releases.py FOLDER``), it builds
the toy foundation and the planted data there, with that release's mace, and says which mace it
imported."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mace-e0-plugin"
PIP_TIMEOUT_S = 300


def release_dir(version: str) -> Path:
    """A folder holding mace-torch ``version`` alone, cached across runs; installed from the package
    registry when absent, whole or not at all (into a temporary folder, then renamed), or skip."""
    target = CACHE / f"mace-torch-{version}"
    if target.is_dir():  # only ever made by the rename below: complete
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".mace-torch-{version}-", dir=CACHE))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--quiet", "--target", str(building), f"mace-torch=={version}"]
    try:
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"mace-torch {version} could not be installed from the package registry: pip did not "
                        f"finish in {PIP_TIMEOUT_S} s (this test needs PyPI once, then uses {target})")
        if result.returncode != 0:
            lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
            pytest.skip(f"mace-torch {version} could not be installed from the package registry "
                        f"(pip install --no-deps --target DIR mace-torch=={version}: "
                        f"{lines[-1] if lines else f'exit status {result.returncode}'}); "
                        f"this test needs PyPI once, then uses {target}")
        try:
            os.rename(building, target)
        except OSError:
            if not target.is_dir():  # not another session's identical copy, made meanwhile
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


# -- the toy foundation and data, built under a release --------------------------------------------------

def build_foundation(e0s, seed: int):
    """mace_e0_plugin.testing.build_foundation's toy, but with what mace-torch 0.3.13's and 0.3.14's
    fine-tuning assume of every foundation (true of MACE-MP's): three hidden layers in the radial MLP
    and correlation 3 (their load_foundations_elements copies conv_tp_weights.layer0..3 and two
    weights per symmetric contraction; with testing's [16, 16] and 2 it raises AttributeError
    'layer3', then IndexError)."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    from mace_e0_plugin.glue import default_dtype

    with default_dtype(torch.float64):
        torch.manual_seed(seed)
        atomic_numbers = sorted(e0s)
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        return modules.ScaleShiftMACE(
            r_max=4.5, num_bessel=6, num_polynomial_cutoff=5, max_ell=2,
            interaction_cls=block, interaction_cls_first=block, num_interactions=2,
            num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps("8x0e+8x1o"),
            MLP_irreps=o3.Irreps("8x0e"), atomic_energies=np.array([[e0s[z] for z in atomic_numbers]]), avg_num_neighbors=6.0,
            atomic_numbers=atomic_numbers, correlation=3, gate=torch.nn.functional.silu,
            radial_MLP=[16, 16, 16], radial_type="bessel", heads=["Default"],
            atomic_inter_scale=[1.0], atomic_inter_shift=[0.0])


def build_inputs(folder: Path):
    """In ``folder``: foundation.model, train.xyz (40 planted configs), mh_train.xyz (12) and
    replay.xyz (20 at the foundation's level), and mace.json, the mace this process imported."""
    import mace
    import torch

    from conftest import Foundation, planted_configs, write_xyz
    from mace_e0_plugin import testing as synthetic

    model = build_foundation(synthetic.LEVEL_A.e0s, seed=7)
    torch.save(model, folder / "foundation.model")
    foundation = Foundation(path=folder / "foundation.model", model=model, e0s=dict(synthetic.LEVEL_A.e0s))
    write_xyz(folder / "train.xyz", planted_configs(foundation, 40, seed=11))
    write_xyz(folder / "mh_train.xyz", planted_configs(foundation, 12, seed=5))
    write_xyz(folder / "replay.xyz", synthetic.label(synthetic.random_configs(20, seed=6), synthetic.LEVEL_A))
    (folder / "mace.json").write_text(json.dumps({"version": mace.__version__, "file": mace.__file__}))


if __name__ == "__main__":
    build_inputs(Path(sys.argv[1]))
