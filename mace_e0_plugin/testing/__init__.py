"""Toy levels of theory, a tiny MACE foundation and a MACE-MP-0-medium-sized one (random weights), built here (nothing downloaded), for the
tests, the examples and the benchmarks. The product never imports this package."""

from ._mace_mp0 import (MP0_E0S, MP0_MEDIUM_ARCHITECTURE, MP0_MEDIUM_PARAMETERS, build_mace_mp0_medium_like)
from ._synthetic import (ELEMENTS, LEVEL_A, LEVEL_B, PlantedShift, build_foundation, isolated_atoms,
                         label, label_with_model, predict_energies, random_configs)

__all__ = ["ELEMENTS", "LEVEL_A", "LEVEL_B", "PlantedShift", "build_foundation", "isolated_atoms",
           "label", "label_with_model", "predict_energies", "random_configs",
           "build_mace_mp0_medium_like", "MP0_E0S", "MP0_MEDIUM_ARCHITECTURE", "MP0_MEDIUM_PARAMETERS"]
