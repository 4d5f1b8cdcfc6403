"""The guard against mace changes, with fakes of mace: a mace-torch whose version, signatures or
return values differ from the tested one gets no wrappers but the refusal, and a run that asks for
linear_system stops before loading data with one line naming the installed mace-torch and the
supported one; a run that does not ask trains as mace's own."""

import importlib
import inspect
import sys
from pathlib import Path

import pytest

from conftest import PROJECT, finetune_argv, mace_train, saved_e0s
from mace_e0_plugin import adapters
from mace_e0_plugin.training import PIN, TARGETS, TESTED_MACE, incompatibilities

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None


def renamed(function, old: str, new: str):
    """``function`` with its parameter ``old`` called ``new``: a mace release that renamed it."""
    def fake(*args, **kwargs):
        return function(*args, **kwargs)
    signature = inspect.signature(function)
    fake.__signature__ = signature.replace(parameters=[
        p.replace(name=new) if p.name == old else p for p in signature.parameters.values()])
    return fake


@pytest.fixture
def fake_mace(monkeypatch):
    """``install(**{"module:attribute": fake})``: the plugin installed on a mace with those fakes;
    afterwards the real mace and the plugin's wrappers of it are back."""
    from mace.cli import run_train

    adapters.uninstall()

    def install(fakes=(), version=None):
        for where, fake in dict(fakes).items():
            module, name = where.split(":")
            real = getattr(sys.modules[module], name)
            monkeypatch.setattr(sys.modules[module], name, fake)
            if getattr(run_train, name, None) is real:  # bound by ``from ... import``
                monkeypatch.setattr(run_train, name, fake)
        if version is not None:
            monkeypatch.setattr(sys.modules["mace"], "__version__", version)
        return adapters.install()

    yield install
    adapters.uninstall()
    monkeypatch.undo()
    adapters.install()


def wrapped(where: str) -> bool:
    module, name = where.split(":")
    return hasattr(getattr(sys.modules[module], name), "_mace_e0_plugin_wraps")


def test_the_installed_mace_is_the_tested_one_and_the_pin_says_so():
    import mace.cli.run_train  # noqa: F401  (the start-up watcher installs the wrappers)

    assert incompatibilities() == []
    assert all(wrapped(target.where) for target in TARGETS)
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11's tomllib")
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("mace-torch")]
    assert pins == [PIN] and PIN == f"mace-torch=={TESTED_MACE[-1]}"


@pytest.mark.parametrize("fakes, version, reason", [
    ({}, "0.3.17", "version 0.3.17"),
    ({"mace.tools:train": "rank->process_rank"}, None, "mace.tools:train has no parameter 'rank'"),
    ({"mace.tools.train:train_one_epoch": "epoch->epoch_index"}, None,
     "mace.tools.train:train_one_epoch has no parameter 'epoch'"),
    ({"mace.tools.scripts_utils:get_atomic_energies": "E0s->e0s"}, None,
     "mace.tools.scripts_utils:get_atomic_energies has no parameter 'E0s'"),
    ({"mace.modules.loss:WeightedEnergyForcesLoss.forward": "pred->prediction"}, None,
     "mace.modules.loss:WeightedEnergyForcesLoss.forward has no parameter 'pred'"),
], ids=["version", "train", "train_one_epoch", "get_atomic_energies", "loss-call"])
def test_each_difference_is_named_and_only_the_refusal_is_wrapped(fake_mace, monkeypatch, fakes, version, reason):
    fake = {}
    for where, rename in fakes.items():
        module, path = where.split(":")
        old, new = rename.split("->")
        if "." in path:  # a method: fake it on its class
            cls_name, method = path.split(".")
            cls = getattr(importlib.import_module(module), cls_name)
            monkeypatch.setattr(cls, method, renamed(getattr(cls, method), old, new))
        else:
            fake[where] = renamed(getattr(sys.modules[module], path), old, new)
    door = fake_mace(fake, version)
    assert reason in door.unsupported
    assert {t.where for t in TARGETS if wrapped(t.where)} == {t.where for t in TARGETS if t.refusal}


def test_a_renamed_train_parameter_stops_linear_system_before_any_data_and_leaves_other_runs_alone(
        fake_mace, foundation, planted_train, tmp_path):
    from mace import tools

    fake_mace({"mace.tools:train": renamed(tools.train, "rank", "process_rank")})
    with pytest.raises(SystemExit) as stop:
        mace_train(finetune_argv(foundation, planted_train, tmp_path / "asked"))
    message = str(stop.value)
    assert message.startswith("mace-e0-plugin: error: --E0s=linear_system is not available: mace-e0-plugin "
                              f"supports {PIN}, and this environment's mace-torch {TESTED_MACE[-1]} differs from it "
                              "(mace.tools:train has no parameter 'rank'), so the plugin left mace as it was.")
    assert "\n" not in message
    assert not (tmp_path / "asked" / "logs").exists()  # mace had not even set up its log

    average = [a if a != "linear_system" else "average" for a in
               finetune_argv(foundation, planted_train, tmp_path / "average", plugin=False)]
    mace_train(average)
    assert saved_e0s(tmp_path / "average" / "ft.model").shape == (1, 3)


@pytest.mark.parametrize("where, returns, shape", [
    ("mace.tools:check_args", lambda result: result[0], "Namespace"),
    ("mace.tools.scripts_utils:get_dataset_from_xyz", lambda result: (*result, None), "a tuple of 3"),
], ids=["check_args", "get_dataset_from_xyz"])
def test_a_changed_return_value_is_caught_where_it_is_first_unpacked(fake_mace, foundation, planted_train, tmp_path,
                                                                      where, returns, shape):
    module, name = where.split(":")
    real = getattr(sys.modules[module], name)

    def fake(*args, **kwargs):
        return returns(real(*args, **kwargs))
    fake.__signature__ = inspect.signature(real)
    door = fake_mace({where: fake})
    assert door.unsupported is None  # signatures as tested: only running shows the difference
    with pytest.raises(SystemExit) as stop:
        mace_train(finetune_argv(foundation, planted_train, tmp_path / "run"))
    message = str(stop.value)
    assert message.startswith("mace-e0-plugin: error: --E0s=linear_system is not available:")
    assert f"({where.replace(':', '.')} returned {shape}, not (" in message and "\n" not in message
    assert not Path(tmp_path / "run" / "ft.model").exists()
