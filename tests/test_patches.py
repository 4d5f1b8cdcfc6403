"""patches/: the upstream-ready changes to mace-torch, applied to a copy of the installed ``mace/``
package that subprocesses import first (``PYTHONPATH``), so the installed mace stays untouched."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import mace
import pytest
import torch

from conftest import PROJECT, PYTHON, expected_e0s, finetune_argv, report, run_command, saved_e0s

PATCHES = PROJECT / "patches"
KEEP_E0S = PATCHES / "0001-keep-requested-E0s-when-loading-foundation.patch"
PLUGIN_HOOK = PATCHES / "0002-plugin-entry-points.patch"
ALL_PATCHES = [KEEP_E0S, PLUGIN_HOOK]
INSTALLED_MACE = Path(mace.__file__).resolve().parent

REQUESTED_E0S = {1: -10.0, 6: -1000.0, 8: -2000.0}  # far from the foundation's (toy level A)

# Run in a subprocess with PYTHONPATH=<copy>: check that the copy is the mace imported, then run
# mace_run_train's main() with the rest of the command line.
RUN_TRAIN = """
import os, sys
import mace
root = os.path.realpath(sys.argv[1])
assert os.path.realpath(mace.__file__).startswith(root + os.sep), mace.__file__
sys.argv = ["mace_run_train"] + sys.argv[2:]
import mace.cli.run_train
mace.cli.run_train.main()
"""


# -- helpers and fixtures --------------------------------------------------------------------------
def patch_program() -> str:
    program = shutil.which("patch")
    if program is None:
        pytest.skip("the `patch` program is not installed (e.g. `apt-get install patch`); "
                    "it is needed to apply patches/ to a copy of mace")
    return program


def pristine_copy(root: Path) -> Path:
    """``root/mace``: a copy of the installed package, without bytecode."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(INSTALLED_MACE, root / "mace", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def apply_patch(root: Path, patch_file: Path, dry_run: bool = False) -> subprocess.CompletedProcess:
    argv = [patch_program(), "-p1", "--batch", "--forward", "-i", str(patch_file)]
    if dry_run:
        argv.append("--dry-run")
    return subprocess.run(argv, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def assert_applies_cleanly(result: subprocess.CompletedProcess, patch_file: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{patch_file.name} does not apply:\n{output}"
    assert "fuzz" not in output.lower() and "offset" not in output.lower(), (
        f"{patch_file.name} applies only approximately:\n{output}")
    assert re.search(r"^(patching|checking) file mace/", output, re.MULTILINE), output


def patched_copy(tmp_path_factory, name: str, patch_files: List[Path]) -> Path:
    root = pristine_copy(tmp_path_factory.mktemp(name))
    for patch_file in patch_files:
        assert_applies_cleanly(apply_patch(root, patch_file), patch_file)
    return root


@pytest.fixture(scope="module")
def keep_e0s_mace(tmp_path_factory) -> Path:
    """A copy of mace with patch 0001 applied."""
    return patched_copy(tmp_path_factory, "mace_0001", [KEEP_E0S])


@pytest.fixture(scope="module")
def plugin_mace(tmp_path_factory) -> Path:
    """A copy of mace with patch 0002 applied (and not 0001: the plugin must not need it)."""
    return patched_copy(tmp_path_factory, "mace_0002", [PLUGIN_HOOK])


# One thread per mace run: these tiny models gain nothing from more, and two runs share the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def python_env(mace_root: Path, plugin: bool = True) -> Dict[str, str]:
    """For run_command: the copy at mace_root shadows the installed mace."""
    paths = [str(mace_root)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = dict(ONE_THREAD, PYTHONPATH=os.pathsep.join(paths))
    if not plugin:
        env["MACE_E0_PLUGIN"] = "0"
    return env


def failure(result: subprocess.CompletedProcess) -> str:
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"


def e0s_tensor(e0s: Dict[int, float]) -> torch.Tensor:
    return torch.tensor([e0s[z] for z in sorted(e0s)], dtype=torch.float64)


def marked_line(output: str, marker: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(marker)]
    assert lines, f"no line starting with {marker!r} in:\n{output[-4000:]}"
    return lines[-1][len(marker):]


# -- every patch applies, alone and together ----------------------------------------------------------
def test_each_patch_has_a_header_and_applies_exactly_to_the_installed_mace(tmp_path):
    for patch_file in ALL_PATCHES:
        text = patch_file.read_text()
        header = text.split("\ndiff --git ", 1)[0]
        assert header.strip() and not header.lstrip().startswith(("diff ", "--- ")), patch_file.name
        assert "a/mace/" in text and "b/mace/" in text
        root = pristine_copy(tmp_path / patch_file.stem)
        assert_applies_cleanly(apply_patch(root, patch_file, dry_run=True), patch_file)


@pytest.mark.parametrize("order", [ALL_PATCHES, ALL_PATCHES[::-1]], ids=["0001-then-0002", "0002-then-0001"])
def test_the_patches_apply_together_in_either_order(tmp_path, order):
    root = pristine_copy(tmp_path)
    first, second = order
    assert_applies_cleanly(apply_patch(root, first), first)
    assert_applies_cleanly(apply_patch(root, second, dry_run=True), second)
    assert_applies_cleanly(apply_patch(root, second), second)
    leftovers = [p.name for p in (root / "mace").rglob("*") if p.suffix in (".rej", ".orig")]
    assert not leftovers
    assert (root / "mace" / "tools" / "plugins.py").is_file()
    assert "atomic_energies_fn.atomic_energies" in (root / "mace" / "tools" / "finetuning_utils.py").read_text()


# -- 0001: the requested E0s survive load_foundations_elements -----------------------------------------
@pytest.mark.slow
def test_0001_keeps_the_requested_E0s_that_unpatched_mace_replaces_by_the_foundations(
        foundation, planted_train, keep_e0s_mace, tmp_path):
    e0s_file = tmp_path / "E0s.json"  # the foundation's elements, other values
    e0s_file.write_text(json.dumps({str(z): e for z, e in REQUESTED_E0S.items()}))

    def argv(work: Path) -> List[str]:
        arguments = finetune_argv(foundation, planted_train, work, plugin=False)
        arguments[arguments.index("--E0s") + 1] = str(e0s_file)
        return arguments

    # Both runs at once: each is a few seconds of mostly single-threaded start-up.
    unpatched_work, patched_work = tmp_path / "unpatched", tmp_path / "patched"
    environment = dict(os.environ, MACE_E0_PLUGIN="0", **ONE_THREAD)
    unpatched = subprocess.Popen([PYTHON, "-m", "mace.cli.run_train", *argv(unpatched_work)], cwd=tmp_path,
                                 env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    patched = run_command([PYTHON, "-c", RUN_TRAIN, str(keep_e0s_mace), *argv(patched_work)], cwd=tmp_path,
                          env=python_env(keep_e0s_mace, plugin=False))
    out, err = unpatched.communicate(timeout=600)
    unpatched = subprocess.CompletedProcess(unpatched.args, unpatched.returncode, out, err)
    assert unpatched.returncode == 0, failure(unpatched)
    assert patched.returncode == 0, failure(patched)

    requested, foundations = e0s_tensor(REQUESTED_E0S), e0s_tensor(foundation.e0s)
    assert not torch.allclose(requested, foundations, atol=1.0)
    # The bug: the installed mace logs the requested E0s as used, then saves the foundation's.
    assert "Atomic Energies used (z: eV) for head Default: {1: -10.0, 6: -1000.0, 8: -2000.0}" in unpatched.stdout
    assert torch.allclose(saved_e0s(unpatched_work / "ft.model")[0], foundations, atol=1e-12, rtol=0)
    # The fix.
    assert torch.allclose(saved_e0s(patched_work / "ft.model")[0], requested, atol=1e-12, rtol=0)


# -- 0002: the mace.plugins entry points ---------------------------------------------------------------
@pytest.mark.slow
def test_0002_runs_linear_system_through_the_entry_point_without_the_start_up_wrappers(
        foundation, planted_train, plugin_mace, tmp_path):
    work = tmp_path / "run"
    code = RUN_TRAIN + """
import json
import mace.tools, mace.tools.scripts_utils
from mace.tools import plugins
from mace_e0_plugin import adapters
from mace_e0_plugin.training import TARGETS
wrapped = [t.where for t in TARGETS if hasattr(getattr(sys.modules[t.module], t.name), "_mace_e0_plugin_wraps")
           or hasattr(getattr(mace.cli.run_train, t.name, None), "_mace_e0_plugin_wraps")]
print("RESULT " + json.dumps({"has_hook": adapters.mace_has_plugin_hook(), "wrapped": wrapped,
                              "plugins": [name for name, _ in plugins.load_plugins()]}))
"""
    argv = finetune_argv(foundation, planted_train, work, "--E0s_refit", "epoch+final")
    result = run_command([PYTHON, "-c", code, str(plugin_mace), *argv], cwd=tmp_path, env=python_env(plugin_mace))
    assert result.returncode == 0, failure(result)
    state = json.loads(marked_line(result.stdout, "RESULT "))
    assert state == {"has_hook": True, "wrapped": [], "plugins": ["e0"]}
    content = report(work)
    assert content["heads"]["Default"]["estimated_E0s"] == pytest.approx(
        {str(z): e for z, e in zip(sorted(foundation.e0s), expected_e0s(foundation).tolist())}, abs=1e-6)
    # The epoch_start/epoch_end/after_training hooks drive the refits: the saved model has the final one.
    assert [(r["kind"], r["epoch"]) for r in content["refits"]] == [("epoch", 0), ("final", 0)]
    final = content["refits"][-1]["E0s"]
    assert saved_e0s(work / "ft.model")[0].tolist() == [final[str(z)] for z in sorted(foundation.e0s)]


@pytest.mark.slow  # a fresh interpreter that imports torch and mace
def test_0002_help_lists_the_plugins_options(plugin_mace, tmp_path):
    code = """
import os, sys
import mace, mace.tools
root = os.path.realpath(sys.argv[1])
assert os.path.realpath(mace.__file__).startswith(root + os.sep), mace.__file__
import mace.cli.run_train
print("WRAPPED", hasattr(mace.tools.build_default_arg_parser, "_mace_e0_plugin_wraps"), flush=True)
sys.argv = ["mace_run_train", "--help"]
mace.cli.run_train.main()
"""
    result = run_command([PYTHON, "-c", code, str(plugin_mace)], cwd=tmp_path, env=python_env(plugin_mace))
    assert result.returncode == 0, failure(result)
    assert marked_line(result.stdout, "WRAPPED ") == "False"
    assert "--E0s_prior" in result.stdout and "--E0s_weighting" in result.stdout and "--E0s_refit" in result.stdout
    assert "linear_system" in result.stdout


@pytest.mark.slow  # a fresh interpreter that imports torch and mace
def test_0002_a_plugin_that_fails_to_import_is_a_warning_not_a_crash(plugin_mace, tmp_path):
    (tmp_path / "broken_mace_plugin.py").write_text("raise RuntimeError('this plugin is broken on purpose')\n")
    code = """
import importlib.metadata as metadata
import os, sys

real_entry_points = metadata.entry_points
broken = metadata.EntryPoint(name="broken", value="broken_mace_plugin:Plugin", group="mace.plugins")

def entry_points(**selection):
    found = real_entry_points(group="mace.plugins")
    return metadata.EntryPoints([broken, *found]).select(**selection) if selection else metadata.EntryPoints([broken, *found])

metadata.entry_points = entry_points
import mace
root = os.path.realpath(sys.argv[1])
assert os.path.realpath(mace.__file__).startswith(root + os.sep), mace.__file__
from mace.tools import build_default_arg_parser, plugins
first = [name for name, _ in plugins.load_plugins()]
again = [name for name, _ in plugins.load_plugins()]
parser = build_default_arg_parser()
print("RESULT", first, again, "--E0s_prior" in parser.format_help())
"""
    result = run_command([PYTHON, "-c", code, str(plugin_mace)], cwd=tmp_path, env=python_env(plugin_mace))
    assert result.returncode == 0, failure(result)
    assert marked_line(result.stdout, "RESULT ") == "['e0'] ['e0'] True"  # the good one kept
    assert result.stderr.count("Could not load MACE plugin 'broken'") == 1, result.stderr  # loaded once
    assert "broken on purpose" in result.stderr
