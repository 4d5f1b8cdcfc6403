"""The start-up hook: free for programs that never run mace's training, active for those that do,
and harmless when mace changes or the user turns it off. (Its cost in time is a benchmark:
benchmarks/startup.py.)"""

from conftest import PYTHON, run_command

PROBE = "import sys; print(sorted(m for m in ('torch', 'mace', 'numpy') if m in sys.modules))"


def python(code, tmp_path, env=None):
    result = run_command([PYTHON, "-c", code], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_a_bare_interpreter_imports_neither_torch_nor_mace(tmp_path):
    assert python(PROBE, tmp_path).stdout.strip() == "[]"


def test_importing_run_train_installs_the_hook_once(tmp_path):
    code = (
        "import sys, mace.cli.run_train as rt, mace.tools as t\n"
        "from mace_e0_plugin import adapters\n"
        "first = t.train\n"
        "adapters.install(); adapters.install()\n"
        "print(getattr(t.train, adapters._MARK).__module__, t.train is first,\n"
        "      rt.get_atomic_energies is t.scripts_utils.get_atomic_energies,\n"
        "      any(getattr(f, 'is_mace_e0_plugin_watcher', False) for f in sys.meta_path))\n")
    assert python(code, tmp_path).stdout.split()[-4:] == ["mace.tools.train", "True", "True", "False"]


def test_the_watcher_is_installed_once_even_if_the_bootstrap_runs_twice(tmp_path):
    code = ("import importlib, sys, mace_e0_plugin._bootstrap as b\n"
            "importlib.reload(b)\n"
            "print(sum(getattr(f, 'is_mace_e0_plugin_watcher', False) for f in sys.meta_path))")
    assert python(code, tmp_path).stdout.strip() == "1"


def test_environment_variable_turns_it_off(tmp_path):
    code = ("import sys, mace.tools as t, mace.cli.run_train\n"
            "print(any(getattr(f, 'is_mace_e0_plugin_watcher', False) for f in sys.meta_path),\n"
            "      hasattr(t.train, '_mace_e0_plugin_wraps'))")
    for value in ("0", "false", "OFF"):
        assert python(code, tmp_path, env={"MACE_E0_PLUGIN": value}).stdout.split()[-2:] == ["False", "False"]


def test_a_mace_without_the_wrapped_symbols_gets_a_warning_not_a_crash(tmp_path):
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import mace.tools as t\n"
            "del t.check_args\n"
            "import mace.cli.run_train\n"
            "print('patched:', hasattr(t.train, '_mace_e0_plugin_wraps'))")
    result = python(code, tmp_path)
    assert result.stdout.strip().endswith("patched: False")
    assert "mace-e0-plugin supports mace-torch 0.3.x" in result.stderr and "mace.tools.check_args" in result.stderr
