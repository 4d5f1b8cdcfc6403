"""What docs/ quotes, produced by running the code. A quoted block in docs/*.md is marked

    <!-- output: KEY -->
    ```console
    ...
    ```

and is the output of the producer that makes KEY, run here on the same inputs: toy ones built here,
or ../shared's. tests/test_doc_outputs.py runs every producer and compares each block with its
output, numbers masked (timings, and the last digits of floats, vary between machines; where
../shared's data are large, the check runs on a few of their frames); ``...`` in a block stands for
lines left out. ``python tests/doc_outputs.py --write`` rewrites every block with a full run's
exact output.
"""

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import ase.io
import torch

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SHARED = PROJECT.parent / "shared"
DOCS = PROJECT / "docs"
BLOCK = re.compile(r"(<!-- output: ([\w-]+) -->\n```[^\n]*\n)(.*?)(^```)", re.S | re.M)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
GENERATED = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- /generated -->)", re.S)
ELISION = "..."


class NeedsShared(Exception):
    """A producer whose inputs are ../shared's, which is absent."""


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise NeedsShared(f"../shared/{'/'.join(parts)}")
    return path


# -- running the doors, as a user would ------------------------------------------------------------
@contextlib.contextmanager
def inside(folder: Path):
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def session(folder: Path, commands: List[str]) -> str:
    """``$ mace-e0 ...`` and what each command prints (stdout, then stderr), run in ``folder``."""
    from mace_e0_plugin.doors import main

    lines = []
    with inside(folder):
        for command in commands:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(shlex.split(command)[1:])
            progress_bars = re.compile(r"[^\n]*\r")  # tqdm redraws its line with \r and clears it at the end
            lines += [f"$ {command}", out.getvalue().rstrip("\n"), progress_bars.sub("", err.getvalue()).strip()]
    return "\n".join(line for line in lines if line) + "\n"


def fine_tune_log(folder: Path, argv: List[str]) -> List[str]:
    """mace_run_train in this process, in ``folder``; the lines of its log, without the time stamps."""
    from conftest import mace_train

    with inside(folder):
        mace_train(argv)
    log = next((folder / "run" / "logs").glob("*.log")).read_text()
    return [re.sub(r"^\S+ \S+ (INFO|WARNING|ERROR): ", lambda m: "ERROR: " if m.group(1) == "ERROR" else "", line)
            for line in log.splitlines()]


def toy_case(folder: Path, **planted):
    """The toy foundation as foundation.model and planted training data as train.xyz, in ``folder``."""
    from conftest import Foundation, planted_configs, write_xyz
    from mace_e0_plugin import testing as synthetic

    model = synthetic.build_foundation(synthetic.LEVEL_A.e0s, seed=7)
    torch.save(model, folder / "foundation.model")
    foundation = Foundation(folder / "foundation.model", model, dict(synthetic.LEVEL_A.e0s))
    configs = planted_configs(foundation, planted.pop("n_configs", 40), seed=11, **planted)
    isolated = planted.get("stoichiometry") and synthetic.isolated_atoms(synthetic.LEVEL_B)
    write_xyz(folder / "train.xyz", (isolated or []) + configs)
    return foundation


def toy_argv(*extra: str) -> List[str]:
    return ["--name", "ft", "--work_dir", "run", "--seed", "1", "--foundation_model", "foundation.model",
            "--train_file", "train.xyz", "--valid_fraction", "0.1", "--energy_key", "REF_energy",
            "--forces_key", "REF_forces", "--max_num_epochs", "1", "--batch_size", "8", "--valid_batch_size", "16",
            "--device", "cpu", "--default_dtype", "float64", "--E0s", "linear_system", *extra]


# -- the producers: each makes the blocks of some keys ----------------------------------------------
def training_outputs(folder: Path, full: bool) -> Dict[str, str]:  # pylint: disable=unused-argument
    """docs/training.md: the estimate's table and the refit lines of a toy fine-tune (every frame of
    one stoichiometry, with isolated atoms), the ERROR line of a failed final refit, and the one-line
    stops for a bad prior and an unsupported mace-torch."""
    from mace_e0_plugin.training import _refitter as _refit
    from mace_e0_plugin.training import TrainingDoor, _compat

    outputs = {}
    (folder / "a").mkdir()
    toy_case(folder / "a", stoichiometry={1: 6, 6: 2, 8: 1}, n_configs=25)
    log = fine_tune_log(folder / "a", toy_argv("--E0s_refit", "epoch+final", "--max_num_epochs", "2"))
    start = next(i for i, line in enumerate(log) if line.startswith("E0 re-estimation for head"))
    end = next(i for i in range(start, len(log)) if log[i].startswith("RMSE of E per atom"))
    outputs["training-estimate-table"] = "\n".join(log[start:end + 1]) + "\n"
    outputs["training-refit-lines"] = "\n".join(line for line in log if line.startswith("E0 refit, head")) + "\n"

    (folder / "b").mkdir()
    toy_case(folder / "b")
    real = _refit.estimate_e0s

    def out_of_memory(*_args, **_kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    _refit.estimate_e0s = out_of_memory
    try:
        log = fine_tune_log(folder / "b", toy_argv("--E0s_refit", "final"))
    finally:
        _refit.estimate_e0s = real
    outputs["training-failure-line"] = "\n".join(line for line in log if line.startswith("ERROR: mace-e0-plugin")) + "\n"

    (folder / "b" / "e0s.json").write_text(json.dumps({"Xx": -1.0}))
    outputs["training-bad-prior"] = _stop(folder / "b", toy_argv("--E0s_prior", "e0s.json"), TrainingDoor())
    version = _compat.installed_mace_version
    _compat.installed_mace_version = lambda: "0.3.17"
    try:
        outputs["training-unsupported-mace"] = _stop(folder / "b", toy_argv(), TrainingDoor(["mace.tools:train has no parameter 'rank'"]))
    finally:
        _compat.installed_mace_version = version
    return outputs


def _stop(folder: Path, argv: List[str], door) -> str:
    """The one line a run that asks for linear_system stops with, before any data are loaded."""
    import mace.cli.run_train  # noqa: F401  (the plugin's options join mace's parser when it loads)
    from mace import tools

    with inside(folder):
        args = tools.build_default_arg_parser().parse_args(argv)
        try:
            door.configure(args)
        except SystemExit as stop:
            return f"{stop}\n"
    raise AssertionError(f"{argv} did not stop")


def write_failure_outputs(folder: Path, full: bool) -> Dict[str, str]:  # pylint: disable=unused-argument
    """docs/training.md: mace-e0 apply --force onto a full disk."""
    import errno
    from unittest import mock

    from mace_e0_plugin import testing as synthetic

    model = synthetic.build_foundation(synthetic.LEVEL_A.e0s, seed=7)
    torch.save(model, folder / "model.model")
    torch.save(model, folder / "new.model")
    (folder / "e0s.json").write_text(json.dumps({"1": -13.0}))
    real = tempfile.NamedTemporaryFile

    def full_disk(*args, **kwargs):
        handle = real(*args, **kwargs)
        handle.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        return handle

    with mock.patch.object(tempfile, "NamedTemporaryFile", full_disk):
        text = session(folder, ["mace-e0 apply model.model e0s.json --output new.model --force"])
    return {"training-cannot-write": "\n".join(text.splitlines()[1:]) + "\n"}


def mace_e0_session(folder: Path, full: bool) -> Dict[str, str]:
    """docs/mace-e0.md: the GFN2-xTB model moved to PBE ethanol and methanol, isolated atoms as prior."""
    os.symlink(shared("models", "mace01_cho_xtb.model"), folder / "mace01_cho_xtb.model")
    data = shared("data", "ethanol-methanol-pbe")
    shutil.copyfile(data / "isolated_atoms.xyz", folder / "isolated_atoms.xyz")
    frames = ase.io.read(data / "train_eth_meth.xyz", ":" if full else "::20")  # both molecules
    ase.io.write(folder / "train_eth_meth.xyz", frames)
    same = "mace-e0 apply mace01_cho_xtb.model report.json --output cho_pbe.model"
    return {"mace-e0-session": session(folder, [
        "mace-e0 estimate mace01_cho_xtb.model train_eth_meth.xyz --energy-key REF_energy --prior isolated_atoms.xyz "
        "--output report.json --e0s-json e0s.json --plot estimate.png",
        same, "mace-e0 show cho_pbe.model", same])}


def diagnose_and_check(folder: Path, full: bool) -> Dict[str, str]:  # pylint: disable=unused-argument
    """docs/diagnose-and-check.md: the colleague's model (examples/diagnose_example.py), and a model
    whose E0s were fitted on water only, checked against ions."""
    sys.path.insert(0, str(PROJECT / "examples"))
    try:
        import diagnose_example
    finally:
        sys.path.remove(str(PROJECT / "examples"))
    from conftest import planted_configs, write_xyz
    from test_provenance_and_check import WATER, molecules

    (folder / "colleague").mkdir()
    diagnose_example.planted_case(folder / "colleague")
    outputs = {"diagnose-colleague": session(folder / "colleague", [
        "mace-e0 diagnose colleague.model data.xyz --energy-key REF_energy --forces-key REF_forces "
        "--prior isolated_atoms.xyz --output diag.json --plot diagnose.png"])}

    (folder / "water").mkdir()
    foundation = toy_case(folder / "water")
    write_xyz(folder / "water" / "water.xyz", planted_configs(foundation, 20, seed=5, stoichiometry=WATER))
    molecules(folder / "water" / "ions.xyz")
    session(folder / "water", ["mace-e0 estimate foundation.model water.xyz --energy-key REF_energy --output estimate.json",
                               "mace-e0 apply foundation.model estimate.json --output water.model"])
    shown = session(folder / "water", ["mace-e0 show water.model"])
    outputs["show-provenance-water"] = next(line for line in shown.splitlines() if "E0 provenance" in line) + "\n"
    outputs["check-water"] = session(folder / "water", ["mace-e0 check water.model ions.xyz --output check.json"])
    return outputs


def python_api_walkthrough(folder: Path, full: bool) -> Dict[str, str]:  # pylint: disable=unused-argument
    """docs/python-api.md: its own Python cells, run in order from the project folder (on the first 5
    frames when checking), each cell's printout the output block after it."""
    shared("data", "caco3-water", "training_set_50_revPBE0_D3.xyz")
    text = (DOCS / "python-api.md").read_text()
    cells = re.findall(r"^```python\n((?:(?!^```).)*?)^```\n<!-- output: ([\w-]+) -->", text, re.S | re.M)
    namespace: Dict[str, object] = {}
    outputs = {}
    with inside(PROJECT):
        for code, key in cells:
            if not full:
                code = code.replace('.xyz", ":")', '.xyz", ":5")')
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(code, f"docs/python-api.md ({key})", "exec"), namespace)  # pylint: disable=exec-used
            outputs[key] = printed.getvalue()
    return outputs


PRODUCERS: List[Callable[[Path, bool], Dict[str, str]]] = [
    training_outputs, write_failure_outputs, mace_e0_session, diagnose_and_check, python_api_walkthrough]


# -- comparing and writing ---------------------------------------------------------------------------
def blocks() -> Dict[str, tuple]:
    """{KEY: (page, the block's text)} of every marked block in docs/."""
    found = {}
    for page in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(page.read_text()):
            assert match.group(2) not in found, f"{match.group(2)} is marked twice"
            found[match.group(2)] = (page, match.group(3))
    return found


def masked(text: str) -> List[str]:
    return [" ".join(NUMBER.sub("#", line).split()) for line in text.splitlines() if line.strip()]


def differences(quoted: str, produced: str) -> List[str]:
    """What in the quoted block the code does not print (numbers masked; ``...`` skips lines)."""
    want, have = masked(quoted), masked(produced)
    problems, position = [], 0
    skipping = False
    for line in want:
        if line == ELISION:
            skipping = True
            continue
        if skipping:
            while position < len(have) and have[position] != line:
                position += 1
        if position < len(have) and have[position] == line:
            position += 1
            skipping = False
        else:
            problems.append(f"quoted: {line!r}; the code prints: {have[position] if position < len(have) else '(end)'!r}")
            skipping = False
    if not skipping and position < len(have):
        problems.append(f"the code prints more: {have[position]!r}")
    return problems


def produce(full: bool) -> Dict[str, str]:
    outputs = {}
    for producer in PRODUCERS:
        with tempfile.TemporaryDirectory() as folder:
            try:
                outputs.update(producer(Path(folder), full))
            except NeedsShared:
                continue
    return outputs


def write() -> None:
    """Rewrite every marked block with a full run's exact output, and every generated table."""
    from options_reference import exit_statuses_table, options_table

    outputs = produce(full=True)
    tables = {"options_table": options_table(), "exit_statuses_table": exit_statuses_table()}
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        new = BLOCK.sub(lambda m: m.group(1) + outputs.get(m.group(2), m.group(3)) + m.group(4), text)
        new = GENERATED.sub(lambda m: m.group(1) + tables[m.group(2)] + m.group(4), new)
        if new != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(PROJECT)}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.exit(__doc__)


