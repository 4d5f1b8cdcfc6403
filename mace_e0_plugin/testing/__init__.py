"""Toy levels of theory and small MACE foundations, built here (nothing downloaded), for the
tests, the examples and the benchmarks. The product never imports this package."""

from ._synthetic import (ELEMENTS, LEVEL_A, LEVEL_B, PlantedShift, ToyLevel, build_foundation, isolated_atoms,
                         label, label_with_model, pair_energy_forces, predict_energies, random_configs)

__all__ = ["ELEMENTS", "LEVEL_A", "LEVEL_B", "ToyLevel", "PlantedShift", "build_foundation", "isolated_atoms",
           "label", "label_with_model", "pair_energy_forces", "predict_energies", "random_configs"]
