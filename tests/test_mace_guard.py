"""The guard against mace changes, with fakes of mace: a mace-torch whose signatures or return
values differ from what the wrappers rely on gets no wrappers but the refusal, and a run that asks
for linear_system stops before loading data with one line naming the installed mace-torch and the
tested ones; a run that does not ask trains as mace's own. A newer version string alone refuses
nothing: that mace trains, with one warning line naming the tested releases."""

import importlib
import inspect
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from conftest import PROJECT, expected_e0s, finetune_argv, mace_train, report, saved_e0s
from mace_e0_plugin import adapters
from mace_e0_plugin.training import REQUIREMENT, TARGETS, TESTED_MACE, incompatibilities
from mace_e0_plugin.training._compat import untested_warning

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


NEWER = "0.3.17"  # a release after every tested one, with 0.3.16's functions (faked)
REFUSAL = (f"mace-e0-plugin: error: --E0s=linear_system is not available: mace-e0-plugin relies on functions of "
           f"mace-torch {TESTED_MACE[0]} to {TESTED_MACE[-1]} (tested), and this environment's mace-torch ")


def test_the_installed_mace_is_a_tested_one_and_pyproject_requires_the_tested_range():
    import mace.cli.run_train  # noqa: F401  (the start-up watcher installs the wrappers)
    from packaging.requirements import Requirement
    from packaging.version import Version

    assert incompatibilities() == []
    assert all(wrapped(target.where) for target in TARGETS)
    assert metadata.version("mace-torch") in TESTED_MACE
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs Python 3.11's tomllib")
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    requirements = [d for d in pyproject["project"]["dependencies"] if d.startswith("mace-torch")]
    assert requirements == [REQUIREMENT]
    # TESTED_MACE's ends are the requirement's bounds: its first is the lowest allowed, its last is
    # allowed, and nothing between them is left out.
    tested = [Version(v) for v in TESTED_MACE]
    assert tested == sorted(tested)
    specifier = Requirement(REQUIREMENT).specifier
    assert {s.operator for s in specifier} == {">=", "<"}
    assert next(Version(s.version) for s in specifier if s.operator == ">=") == tested[0]
    assert all(v in specifier for v in TESTED_MACE)
    assert Version(NEWER) in specifier  # the next patch release installs, untested (the warning below)


def test_a_newer_version_string_alone_refuses_nothing(fake_mace):
    door = fake_mace({}, NEWER)
    assert door.unsupported is None
    assert all(wrapped(target.where) for target in TARGETS)
    assert TESTED_MACE[0] in untested_warning() and TESTED_MACE[-1] in untested_warning() and NEWER in untested_warning()


@pytest.mark.parametrize("fakes, version, reason", [
    ({"mace.tools:train": "rank->process_rank"}, NEWER, "mace.tools:train has no parameter 'rank'"),
    ({"mace.tools.train:train_one_epoch": "epoch->epoch_index"}, None,
     "mace.tools.train:train_one_epoch has no parameter 'epoch'"),
    ({"mace.tools.scripts_utils:get_atomic_energies": "E0s->e0s"}, None,
     "mace.tools.scripts_utils:get_atomic_energies has no parameter 'E0s'"),
    ({"mace.modules.loss:WeightedEnergyForcesLoss.forward": "pred->prediction"}, None,
     "mace.modules.loss:WeightedEnergyForcesLoss.forward has no parameter 'pred'"),
], ids=["newer-train", "train_one_epoch", "get_atomic_energies", "loss-call"])
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


def plugin_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name.startswith("mace_e0_plugin") and r.levelname == "WARNING"]


@pytest.mark.slow
def test_a_newer_mace_with_the_same_functions_trains_with_one_warning_line(fake_mace, foundation, planted_train,
                                                                           tmp_path, caplog):
    fake_mace({}, NEWER)
    warning = untested_warning()
    assert warning.startswith(f"mace-e0-plugin: mace-torch {NEWER} is not a tested release "
                              f"(mace-torch {TESTED_MACE[0]} to {TESTED_MACE[-1]});")
    work = tmp_path / "run"
    mace_train(finetune_argv(foundation, planted_train, work))
    assert torch.allclose(saved_e0s(work / "ft.model")[0], expected_e0s(foundation), atol=1e-6, rtol=0)
    assert report(work)["heads"]["Default"]["n_configs"] == 36
    assert plugin_warnings(caplog) == [warning] and "\n" not in warning


@pytest.mark.slow
def test_a_newer_mace_with_a_renamed_train_parameter_stops_linear_system_before_any_data_and_leaves_other_runs_alone(
        fake_mace, foundation, planted_train, tmp_path, caplog):
    from mace import tools

    door = fake_mace({"mace.tools:train": renamed(tools.train, "rank", "process_rank")}, NEWER)
    assert {t.where for t in TARGETS if wrapped(t.where)} == {t.where for t in TARGETS if t.refusal}
    with pytest.raises(SystemExit) as stop:
        mace_train(finetune_argv(foundation, planted_train, tmp_path / "asked"))
    message = str(stop.value)
    assert message.startswith(REFUSAL + f"{NEWER} differs (mace.tools:train has no parameter 'rank'), so the plugin "
                              "left mace as it was.")
    assert "\n" not in message
    assert not (tmp_path / "asked" / "logs").exists()  # mace had not even set up its log

    average = [a if a != "linear_system" else "average" for a in
               finetune_argv(foundation, planted_train, tmp_path / "average", plugin=False)]
    mace_train(average)
    assert door.run is None
    assert saved_e0s(tmp_path / "average" / "ft.model").shape == (1, 3)
    assert plugin_warnings(caplog) == []  # not even the untested-release warning
    assert not (tmp_path / "average" / "results" / "ft_E0s_linear_system.json").exists()


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
