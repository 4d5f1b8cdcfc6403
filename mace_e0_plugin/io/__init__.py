"""Inputs and outputs: priors, the report (built and read in one module), files written whole or
not at all, figures and text tables. Everything a door writes goes through ``write_outputs``."""

from ._diagnosis_figure import plot_diagnosis
from ._estimate_figure import build_figure, draw_corrections, save_figure
from ._files import save_torch, write_atomically, write_error, write_json
from ._outputs import Outputs, write_outputs
from ._priors import PriorSpec, ResolvedPrior, choose_prior, prior_from, prior_vector, read_prior_file
from ._report import (estimate_report, provenance_from_report, read_e0s_or_report, read_report,
                      report_path, report_with_refits, suspicious_entries)
from ._tables import (format_check, format_combination, format_diagnosis, format_estimate, format_provenance,
                      format_refit)

__all__ = [
    # priors
    "PriorSpec", "ResolvedPrior", "prior_from", "choose_prior", "prior_vector", "read_prior_file",
    # the report
    "estimate_report", "report_with_refits", "report_path",
    "read_report", "read_e0s_or_report", "provenance_from_report", "suspicious_entries",
    # files
    "Outputs", "write_outputs", "write_atomically", "write_json", "save_torch", "write_error",
    # figures
    "build_figure", "draw_corrections", "save_figure", "plot_diagnosis",
    # tables
    "format_combination", "format_estimate", "format_refit",
    "format_provenance", "format_diagnosis", "format_check",
]
