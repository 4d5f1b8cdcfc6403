"""examples/caco3_seed_analysis.ipynb runs top to bottom in a real Jupyter kernel (nbclient and
ipykernel) on the real model and data of ../shared, and shows what it says it shows. It is stored
without outputs (they would go stale, and bloat the history with images): a test keeps it so."""

import os
import re

import pytest

from conftest import PROJECT, shared_path

NOTEBOOK = PROJECT / "examples" / "caco3_seed_analysis.ipynb"
CELL_TIMEOUT_S = 600
H_PER_FRAME = 196  # CaCO3 + 98 H2O
PLANTED_SHIFT_EV = 0.02  # per H atom, as the notebook plants it


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    stored = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not stored, f"code cells {stored} were saved with outputs; clear them (jupyter nbconvert --clear-output --inplace)"


def text_of(outputs) -> str:
    parts = []
    for output in outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(parts)


@pytest.mark.shared
@pytest.mark.slow  # a Jupyter kernel, a fresh interpreter that imports torch and mace, on ../shared's 15-element model
def test_notebook_runs_and_shows_the_analysis(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    shared_path("models", "mace_spice_15el.model")
    shared_path("data", "caco3-water", "training_set_30_MP2.xyz")
    # the kernel imports this checkout's package, and finds ../shared itself from examples/
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MACE_E0_SHARED", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no inline figure"
    text = text_of(outputs)
    assert "E0 re-estimation for head 'Default'" in text and "new E0 / eV" in text, "no E0 table"
    assert "E0(196 H + C + 101 O + Ca)" in text

    # the minimum-norm answer: E0(H) near -195 eV, and the plugin with a zero prior gives it
    hydrogen = re.search(r"^\s+H\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)$", text, re.M)
    lstsq_h, zero_prior_h, foundation_prior_h = map(float, hydrogen.groups())
    assert -200 < lstsq_h < -190 and abs(lstsq_h - zero_prior_h) < 1e-3
    assert abs(foundation_prior_h - lstsq_h) > 100  # the foundation's prior keeps H far from it
    difference = float(re.search(r"largest \|lstsq - plugin with prior 0\|: (\S+) eV", text).group(1))
    assert difference < 1e-6

    # three levels of theory, each rank 1
    for level in ("revPBE-D3", "revPBE0-D3", "MP2"):
        assert re.search(rf"^\s+{level}\s+1\s", text, re.M), level

    # the planted fault: diagnosed along the determined combination, by the amount planted
    planted, diagnosed = map(float, re.search(r"planted: (\S+) eV per frame .*; diagnosed: (\S+) eV", text).groups())
    assert planted == pytest.approx(PLANTED_SHIFT_EV * H_PER_FRAME)
    assert diagnosed == pytest.approx(planted, abs=1e-3)
    assert "RANK-DEFICIENT" in text
    clean = float(re.search(r"the data as they are ask for (\S+) eV per frame", text).group(1))
    assert abs(clean) < 0.05 * planted  # float32 rounding of the written E0s, far below the fault
