"""Every tested mace-torch release (training._compat.TESTED_MACE) other than the installed one, end
to end on the toy foundation: that release's wheel alone first on PYTHONPATH (tests/_mace_releases.py,
cached outside the repository), the foundation and the planted data built under it, then four runs
of it, two at a time:

- naive: ``mace_run_train --E0s=linear_system`` recovers the planted shifts in the saved model;
- multihead: ``python DIR/mace/cli/run_train.py`` (the file-path launch) with replay data and
  ``--E0s_refit=final``: the pt_head keeps the foundation's E0s, the first estimate of the new head
  recovers the planted shifts, and the saved model holds the final refit's E0s;
- not asked: ``--E0s=average`` saves the same bytes with the plugin installed and with
  ``MACE_E0_PLUGIN=0``.

Every run's log must say the release it was asked to run (mace's own "MACE version: X" line)."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Dict

import pytest
import torch

from _mace_releases import release_dir
from conftest import PYTHON, SHIFTS, Foundation, expected_e0s, finetune_argv, report, run_command, saved_e0s
from mace_e0_plugin import testing as synthetic
from mace_e0_plugin.training import TESTED_MACE
from test_inert_unless_asked import records

pytestmark = pytest.mark.slow  # twelve mace_run_train fine-tunes, four per release

HERE = Path(__file__).resolve().parent
OLDER = [release for release in TESTED_MACE if release != version("mace-torch")]
PARALLEL_RUNS = 2


@dataclass
class Release:
    version: str
    path: Path  # the folder holding this mace-torch alone
    folder: Path  # the inputs, and one work dir per run
    foundation: Foundation
    runs: Dict[str, object] = field(default_factory=dict)  # name -> subprocess.CompletedProcess

    def work(self, name: str) -> Path:
        return self.folder / name

    def log(self, name: str) -> str:
        """The run's whole output, once it is known to have run this release to the end."""
        result = self.runs[name]
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        assert f"MACE version: {self.version}\n" in output  # mace's own line: the release asked for ran
        return output


def argv(release: Release, train: str, work: str, *extra: str, refit: str = "none"):
    arguments = finetune_argv(release.foundation, release.folder / train, release.work(work), *extra)
    arguments[arguments.index("--E0s_refit") + 1] = refit
    return arguments


def not_asked(release: Release, work: str):
    return [a if a != "linear_system" else "average"
            for a in finetune_argv(release.foundation, release.folder / "train.xyz", release.work(work), plugin=False)]


@pytest.fixture(scope="module", params=OLDER)
def release(request, tmp_path_factory) -> Release:
    path = release_dir(request.param)
    folder = tmp_path_factory.mktemp(f"mace-torch-{request.param}")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // PARALLEL_RUNS))}
    built = run_command([PYTHON, str(HERE / "_mace_releases.py"), str(folder)], cwd=folder, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    imported = json.loads((folder / "mace.json").read_text())
    assert imported["version"] == request.param and Path(imported["file"]).is_relative_to(path)

    foundation = Foundation(path=folder / "foundation.model", model=None, e0s=dict(synthetic.LEVEL_A.e0s))
    release = Release(request.param, path, folder, foundation)
    launches = {
        "multihead": ([PYTHON, str(path / "mace" / "cli" / "run_train.py")] + argv(
            release, "mh_train.xyz", "multihead", "--multiheads_finetuning", "True", "--pt_train_file",
            str(folder / "replay.xyz"), "--force_mh_ft_lr", "True", refit="final"), {}),
        "naive": (["mace_run_train"] + argv(release, "train.xyz", "naive"), {}),
        "installed": (["mace_run_train"] + not_asked(release, "installed"), {}),
        "off": (["mace_run_train"] + not_asked(release, "off"), {"MACE_E0_PLUGIN": "0"}),
    }
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        futures = {name: pool.submit(run_command, command, folder, {**env, **extra})
                   for name, (command, extra) in launches.items()}
        release.runs = {name: future.result() for name, future in futures.items()}
    return release


def test_naive_finetune_recovers_the_planted_shifts(release):
    output = release.log("naive")
    assert "RMSE of E per atom" in output  # the estimate's table, in mace's log
    assert "is not a tested release" not in output  # untested_warning's line: not on a tested release
    work = release.work("naive")
    expected = expected_e0s(release.foundation)
    assert torch.allclose(saved_e0s(work / "ft.model")[0], expected, atol=1e-6, rtol=0)
    head = report(work)["heads"]["Default"]
    assert head["n_configs"] == 36  # 40 minus mace's 10 % validation split
    assert [head["corrections"][str(z)] for z in (1, 6, 8)] == pytest.approx([SHIFTS[z] for z in (1, 6, 8)], abs=1e-6)
    assert saved_e0s(work / "ft.model")[0].tolist() == [head["E0s"][str(z)] for z in (1, 6, 8)]
    assert head["rmse_per_atom_after_meV"] < 1e-3 < head["rmse_per_atom_before_meV"]


def test_multihead_from_the_file_path_saves_the_final_refit(release):
    output = release.log("multihead")
    assert "E0 refit, head 'Default', final" in output
    work = release.work("multihead")
    model = torch.load(work / "ft.model", map_location="cpu", weights_only=False)
    assert model.heads == ["pt_head", "Default"]
    rows = model.atomic_energies_fn.atomic_energies.detach().double()
    assert rows[0].tolist() == [release.foundation.e0s[z] for z in (1, 6, 8)]  # pt_head: the foundation's

    content = report(work)
    assert list(content["heads"]) == ["Default"]
    head = content["heads"]["Default"]
    assert head["n_configs"] == 11  # 12 minus the validation config, no replay
    first = [head["estimated_E0s"][str(z)] for z in (1, 6, 8)]
    assert first == pytest.approx(expected_e0s(release.foundation).tolist(), abs=1e-6)
    [refit] = content["refits"]
    assert (refit["kind"], refit["head"], refit["checkpoint"]) == ("final", "Default", "ft_run-1_epoch-0.pt")
    saved = [head["E0s"][str(z)] for z in (1, 6, 8)]
    assert rows[1].tolist() == saved == [refit["E0s"][str(z)] for z in (1, 6, 8)]
    assert max(abs(a - b) for a, b in zip(saved, first)) > 1e-3  # training moved the network; the refit followed
    assert refit["rmse_per_atom_after_meV"] < refit["rmse_per_atom_before_meV"]


def test_a_run_that_did_not_ask_is_byte_identical_with_the_plugin_off(release):
    release.log("installed")
    release.log("off")
    reference = records(release.work("off") / "ft.model")
    assert len(reference) > 3 and any(name.endswith("data.pkl") for name in reference)
    assert records(release.work("installed") / "ft.model") == reference
    assert not (release.work("installed") / "results" / "ft_E0s_linear_system.json").exists()
