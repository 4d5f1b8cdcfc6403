"""Inputs and outputs: priors, the report (built and read in one module), files written whole or
not at all, figures and text tables. Everything a door writes goes through ``write_outputs``."""

from ._diagnosis_figure import plot_diagnosis
from ._estimate_figure import build_figure, draw_corrections, plot_solution, save_figure
from ._files import save_torch, write_atomically, write_error, write_json
from ._outputs import Outputs, figure_paths, write_outputs
from ._priors import (PYTHON_ATOMS, PYTHON_E0S, Prior, atomic_number, check_prior_source, choose_prior,
                      e0s_from_mapping, isolated_atoms_prior, prior_from, prior_vector, read_e0s_json,
                      read_prior_file)
from ._report import (e0s_mapping, estimate_report, provenance_from_report, read_e0s_or_report, read_report,
                      refit_entry, report_path, report_with_refits, solution_entry, suspicious_entries)
from ._tables import (format_check, format_combination, format_diagnosis, format_estimate, format_provenance,
                      format_refit, format_sampling, format_solution, format_suspicious)

__all__ = [
    # priors
    "Prior", "prior_from", "choose_prior", "prior_vector", "read_prior_file", "read_e0s_json", "e0s_from_mapping",
    "isolated_atoms_prior", "check_prior_source", "atomic_number", "PYTHON_E0S", "PYTHON_ATOMS",
    # the report
    "solution_entry", "estimate_report", "refit_entry", "report_with_refits", "e0s_mapping", "report_path",
    "read_report", "read_e0s_or_report", "provenance_from_report", "suspicious_entries",
    # files
    "Outputs", "write_outputs", "figure_paths", "write_atomically", "write_json", "save_torch", "write_error",
    # figures
    "build_figure", "draw_corrections", "plot_solution", "save_figure", "plot_diagnosis",
    # tables
    "format_combination", "format_solution", "format_sampling", "format_estimate", "format_refit",
    "format_provenance", "format_diagnosis", "format_check", "format_suspicious",
]
