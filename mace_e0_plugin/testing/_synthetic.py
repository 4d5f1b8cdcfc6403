"""Toy levels of theory and a tiny MACE foundation, for the example, the tests and the benchmarks.

A toy level of theory gives a config of atoms the energy

    E = sum_i E0[Z_i] + pair_scale * sum_{i<j} D (1 - exp(-a (r_ij - r0)))^2 - D) * cutoff(r_ij)

and the matching forces. A second level shifts every E0 by a different amount and rescales the
pair term: the situation of fine-tuning a foundation model to a new level of theory, with the
E0 shifts known exactly. Nothing here is downloaded.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import ase
import mace  # noqa: F401  (first: it sets up torch.load for e3nn before e3nn is imported)
import numpy as np
import torch
from e3nn import o3
from mace import data as mace_data
from mace import modules
from mace.tools.utils import AtomicNumberTable

from ..glue import default_dtype, forward, make_loader, model_atomic_numbers, model_heads

ELEMENTS = (1, 6, 8)


@dataclass(frozen=True)
class ToyLevel:
    name: str
    e0s: Dict[int, float]
    pair_scale: float = 1.0
    depth: float = 1.2  # eV
    width: float = 1.6  # 1/Angstrom
    r0: float = 1.2  # Angstrom
    cutoff: float = 4.5  # Angstrom


LEVEL_A = ToyLevel("toy-PBE", {1: -13.6, 6: -1029.5, 8: -2041.8})
LEVEL_B = ToyLevel("toy-hybrid", {1: -13.95, 6: -1027.9, 8: -2043.25}, pair_scale=1.06)


def pair_energy_forces(positions: np.ndarray, level: ToyLevel) -> Tuple[float, np.ndarray]:
    delta = positions[:, None, :] - positions[None, :, :]
    distance = np.linalg.norm(delta, axis=-1)
    i, j = np.triu_indices(len(positions), k=1)
    r = distance[i, j]
    inside = r < level.cutoff
    i, j, r = i[inside], j[inside], r[inside]
    decay = np.exp(-level.width * (r - level.r0))
    morse = level.depth * ((1 - decay) ** 2 - 1)
    d_morse = 2 * level.depth * (1 - decay) * level.width * decay
    smooth = 0.5 * (1 + np.cos(np.pi * r / level.cutoff))
    d_smooth = -0.5 * np.pi / level.cutoff * np.sin(np.pi * r / level.cutoff)
    energy = level.pair_scale * float(np.sum(morse * smooth))
    d_energy = level.pair_scale * (d_morse * smooth + morse * d_smooth)
    unit = (positions[i] - positions[j]) / r[:, None]
    forces = np.zeros_like(positions)
    np.add.at(forces, i, -d_energy[:, None] * unit)
    np.add.at(forces, j, d_energy[:, None] * unit)
    return energy, forces


def random_configs(n_configs: int, seed: int = 0, elements: Sequence[int] = ELEMENTS,
                   n_atoms: Tuple[int, int] = (4, 12), stoichiometry: Optional[Dict[int, int]] = None,
                   min_distance: float = 1.0):
    """Random clusters. ``stoichiometry`` fixes the composition of every config (a rank-1 system)."""
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n_configs):
        if stoichiometry:
            numbers = [z for z, count in stoichiometry.items() for _ in range(count)]
        else:
            numbers = list(rng.choice(elements, size=int(rng.integers(n_atoms[0], n_atoms[1] + 1))))
        radius = 1.1 * len(numbers) ** (1 / 3)
        positions: List[np.ndarray] = []
        while len(positions) < len(numbers):
            candidate = rng.uniform(-radius, radius, size=3)
            if all(np.linalg.norm(candidate - p) > min_distance for p in positions):
                positions.append(candidate)
        configs.append(ase.Atoms(numbers=numbers, positions=np.array(positions), pbc=False))
    return configs


def label(configs, level: ToyLevel, energy_key: str = "REF_energy", forces_key: str = "REF_forces"):
    """Set energies and forces of ``level`` on the configs (in place) and return them."""
    for atoms in configs:
        energy, forces = pair_energy_forces(atoms.positions, level)
        atoms.info[energy_key] = energy + sum(level.e0s[int(z)] for z in atoms.numbers)
        atoms.arrays[forces_key] = forces
    return configs


def isolated_atoms(level: ToyLevel, elements: Sequence[int] = ELEMENTS, energy_key: str = "REF_energy"):
    """Single-atom frames with the level's E0s, as MACE reads them (config_type=IsolatedAtom)."""
    frames = []
    for z in elements:
        atoms = ase.Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]], pbc=False)
        atoms.info[energy_key] = level.e0s[z]
        atoms.info["config_type"] = "IsolatedAtom"
        frames.append(atoms)
    return frames


def build_foundation(e0s: Dict[int, float], heads: Sequence[str] = ("Default",), seed: int = 0,
                     r_max: float = 4.5, channels: int = 8, dtype: str = "float64"):
    """A tiny ScaleShiftMACE with random weights and the given E0s (every head the same)."""
    with default_dtype(getattr(torch, dtype)):
        torch.manual_seed(seed)
        atomic_numbers = sorted(e0s)
        energies = np.array([[e0s[z] for z in atomic_numbers]] * len(heads))
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.ScaleShiftMACE(
            r_max=r_max, num_bessel=6, num_polynomial_cutoff=5, max_ell=2,
            interaction_cls=block, interaction_cls_first=block, num_interactions=2,
            num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps(f"{channels}x0e+{channels}x1o"),
            MLP_irreps=o3.Irreps("8x0e"), atomic_energies=energies, avg_num_neighbors=6.0,
            atomic_numbers=atomic_numbers, correlation=2, gate=torch.nn.functional.silu,
            radial_MLP=[16, 16], radial_type="bessel", heads=list(heads),
            atomic_inter_scale=[1.0] * len(heads), atomic_inter_shift=[0.0] * len(heads))
    return model


@dataclass
class PlantedShift:
    """Reference energies that are a model's own predictions plus known per-element shifts."""
    shifts: Dict[int, float] = field(default_factory=lambda: {1: -0.35, 6: 1.25, 8: -0.8})

    def apply(self, model, configs, energy_key: str = "REF_energy", head: Optional[str] = None):
        """Label ``configs`` with ``E_model + sum_Z n_Z shift_Z`` (in place); returns them."""
        predictions = predict_energies(model, configs, head=head)
        for atoms, energy in zip(configs, predictions):
            atoms.info[energy_key] = energy + sum(self.shifts[int(z)] for z in atoms.numbers)
        return configs


def label_with_model(model, configs, energy_key: str = "REF_energy", forces_key: str = "REF_forces",
                     head: Optional[str] = None, batch_size: int = 16):
    """Label ``configs`` (in place) with ``model``'s own energies and forces, batched: data on
    which the model is exact, to plant known faults on. Returns them."""
    results = []
    batches = make_loader(_graphs(model, configs, head), batch_size)
    for batch, output in forward(model, batches, next(model.parameters()).device, forces=True):
        forces = output["forces"].detach().double().cpu()
        energies, bounds = output["energy"].detach().double().tolist(), batch.ptr.tolist()
        results += [(energy, forces[start:stop].numpy().copy())
                    for energy, start, stop in zip(energies, bounds[:-1], bounds[1:])]
    for atoms, (energy, forces) in zip(configs, results):
        atoms.info[energy_key] = energy
        atoms.arrays[forces_key] = forces
    return configs


def predict_energies(model, configs, head: Optional[str] = None, batch_size: int = 16) -> List[float]:
    """Energies of ``model`` on ase configs, batched (used to plant shifts on a model's own output)."""
    energies: List[float] = []
    batches = make_loader(_graphs(model, configs, head), batch_size)
    for _, output in forward(model, batches, next(model.parameters()).device):
        energies.extend(output["energy"].double().tolist())
    return energies


def _graphs(model, configs, head: Optional[str]):
    """The configs as graphs for ``model`` (in its dtype), positions and species only."""
    heads = model_heads(model)
    z_table = _table(model_atomic_numbers(model))
    r_max = float(model.r_max)
    graphs = []
    with default_dtype(next(model.parameters()).dtype):
        for atoms in configs:
            config = mace_data.config_from_atoms(atoms, key_specification=mace_data.KeySpecification(),
                                                 head_name=head or heads[0])
            graphs.append(mace_data.AtomicData.from_config(config, z_table=z_table, cutoff=r_max, heads=heads))
    return graphs


def _table(atomic_numbers):
    return AtomicNumberTable(list(atomic_numbers))
