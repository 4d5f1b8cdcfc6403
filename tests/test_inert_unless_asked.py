"""A run that does not ask for linear_system is mace's own: with the plugin installed, turned off
(MACE_E0_PLUGIN=0), or with a fault injected where the plugin reads the run's options (as a
changed mace ``args`` could make it), the saved model is byte-for-byte the same."""

import zipfile
from importlib import metadata

import pytest

from conftest import PYTHON, finetune_argv, run_command
from mace_e0_plugin.training import TESTED_MACE

pytestmark = pytest.mark.slow

# torch.save writes a random id into every archive (``.data/serialization_id``), so two saves of
# the same model differ there and only there; every other record is compared byte for byte.
RANDOM_RECORD = ".data/serialization_id"

# mace_run_train's main(), after the plugin's reading of the E0s values has been broken.
UNREADABLE_OPTIONS = """
import sys
import mace_e0_plugin.training._mace_args as plan

def unreadable(args):
    raise AttributeError("'Namespace' object has no attribute 'heads'")

plan.head_dicts = unreadable
from mace.cli.run_train import main
sys.argv = ["mace_run_train", *sys.argv[1:]]
main()
"""


def records(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist() if not name.endswith(RANDOM_RECORD)}


def average_run(foundation, train, work, launcher, env=None):
    argv = [arg if arg != "linear_system" else "average" for arg in finetune_argv(foundation, train, work, plugin=False)]
    result = run_command(launcher + argv, cwd=work.parent, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "ft.model"


def test_a_run_that_did_not_ask_is_byte_identical_installed_off_and_with_a_fault(foundation, planted_train, tmp_path):
    installed = average_run(foundation, planted_train, tmp_path / "installed", ["mace_run_train"])
    off = average_run(foundation, planted_train, tmp_path / "off", ["mace_run_train"], env={"MACE_E0_PLUGIN": "0"})
    faulty = average_run(foundation, planted_train, tmp_path / "faulty", [PYTHON, "-c", UNREADABLE_OPTIONS])

    reference = records(off)
    assert len(reference) > 3 and any(name.endswith("data.pkl") for name in reference)
    assert records(installed) == reference
    assert records(faulty) == reference
    assert not (tmp_path / "installed" / "results" / "ft_E0s_linear_system.json").exists()


def test_a_run_that_asked_but_whose_options_cannot_be_read_stops_before_loading_data(foundation, planted_train,
                                                                                     tmp_path):
    work = tmp_path / "run"
    result = run_command([PYTHON, "-c", UNREADABLE_OPTIONS] + finetune_argv(foundation, planted_train, work),
                         cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mace-e0-plugin: error: --E0s=linear_system is not available: mace-e0-plugin relies on "
                           f"functions of mace-torch {TESTED_MACE[0]} to {TESTED_MACE[-1]} (tested), and this "
                           f"environment's mace-torch {metadata.version('mace-torch')} differs (")
    assert "its run options could not be read (AttributeError: 'Namespace' object has no attribute 'heads')" in last
    assert "Total number of configurations" not in result.stdout + result.stderr  # before any data were loaded
