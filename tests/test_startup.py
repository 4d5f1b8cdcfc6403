"""The start-up hook: free for programs that never run mace's training, active for those that do,
and harmless when mace changes or the user turns it off. (Its cost in time is a benchmark:
benchmarks/startup.py.)"""

import os

import pytest

from conftest import PYTHON, run_command

PROBE = "import sys; print(sorted(m for m in ('torch', 'mace', 'numpy') if m in sys.modules))"


def python(code, tmp_path, env=None):
    result = run_command([PYTHON, "-c", code], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_a_bare_interpreter_imports_neither_torch_nor_mace(tmp_path):
    assert python(PROBE, tmp_path).stdout.strip() == "[]"


@pytest.mark.slow  # a fresh interpreter that imports torch and mace (~4 s of CPU)
def test_importing_run_train_installs_the_hook_once(tmp_path):
    code = (
        "import sys, mace.cli.run_train as rt, mace.tools as t\n"
        "from mace_e0_plugin import adapters\n"
        "door, first = adapters.installed_door(), t.train\n"
        "print(adapters.install() is door, adapters.install() is door, t.train is first,\n"
        "      rt.get_atomic_energies is t.scripts_utils.get_atomic_energies,\n"
        "      t.train._mace_e0_plugin_wraps.__module__, t.train._mace_e0_plugin_door is door,\n"
        "      any(getattr(f, 'is_mace_e0_plugin_watcher', False) for f in sys.meta_path))\n")
    assert python(code, tmp_path).stdout.split()[-7:] == ["True", "True", "True", "True", "mace.tools.train", "True",
                                                          "False"]


def test_only_mace_s_own_training_script_counts_as_run_as_a_file():
    import mace

    from mace_e0_plugin._bootstrap import runs_training_script

    script = os.path.join(os.path.dirname(mace.__file__), "cli", "run_train.py")
    assert runs_training_script(script)
    assert runs_training_script(os.path.relpath(script))
    assert not runs_training_script(os.path.join(os.path.dirname(mace.__file__), "cli", "eval_configs.py"))
    assert not runs_training_script("/home/me/my_project/run_train.py")
    assert not runs_training_script("-m") and not runs_training_script(None)


def test_the_script_route_waits_for_exactly_the_functions_the_wrappers_wrap():
    # _bootstrap may not import the adapters (torch) to read their targets, so it names them itself
    from mace_e0_plugin._bootstrap import WRAPPED
    from mace_e0_plugin.training import TARGETS

    assert sorted(WRAPPED) == sorted(target.where for target in TARGETS)


def test_the_watcher_is_installed_once_even_if_the_bootstrap_runs_twice(tmp_path):
    code = ("import importlib, sys, mace_e0_plugin._bootstrap as b\n"
            "importlib.reload(b)\n"
            "print(sum(getattr(f, 'is_mace_e0_plugin_watcher', False) for f in sys.meta_path))")
    assert python(code, tmp_path).stdout.strip() == "1"


@pytest.mark.slow  # three fresh interpreters that import torch and mace (~13 s of CPU)
def test_environment_variable_turns_it_off(tmp_path):
    code = ("import sys, mace.tools as t, mace.cli.run_train\n"
            "print(any(getattr(f, 'is_mace_e0_plugin_watcher', False) for f in sys.meta_path),\n"
            "      hasattr(t.train, '_mace_e0_plugin_wraps'))")
    for value in ("0", "false", "OFF"):
        assert python(code, tmp_path, env={"MACE_E0_PLUGIN": value}).stdout.split()[-2:] == ["False", "False"]


@pytest.mark.slow  # a fresh interpreter that imports torch and mace (~4 s of CPU)
def test_a_mace_without_the_function_that_lets_us_refuse_gets_a_warning_not_a_crash(tmp_path):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import mace.tools as t\n"
            "del t.check_args\n"
            "import mace.cli.run_train\n"
            "print('patched:', hasattr(t.train, '_mace_e0_plugin_wraps'))")
    result = python(code, tmp_path)
    assert result.stdout.strip().endswith("patched: False")
    assert "mace-e0-plugin: this mace-torch lacks mace.tools:check_args" in result.stderr
