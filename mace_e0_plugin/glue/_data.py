"""Data as graphs for a MACE model (glue to mace's readers: extxyz and ase.Atoms through ASE, h5
from mace_prepare_data, and LMDB), their compositions, and the loader the forward pass reads."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from mace import data as mace_data
from mace.tools import torch_geometric
from mace.tools.utils import AtomicNumberTable
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import E0InputError, as_option
from ._models import model_atomic_numbers, model_heads

ISOLATED_ATOM = "IsolatedAtom"
ENERGY_KEY = "_mace_e0_energy"  # where the energy is put on copies of the Atoms for mace's reader
FORCES_KEY = "_mace_e0_forces"  # ... and the forces, when asked for (mace-e0 diagnose)


class ConfigGraphs(Dataset):
    """Graphs built on first use (in DataLoader workers when there are any), each exactly once."""

    def __init__(self, configs, z_table, r_max: float, heads: Sequence[str]):
        self.configs, self.z_table, self.r_max, self.heads = configs, z_table, r_max, list(heads)

    def __len__(self) -> int:
        return len(self.configs)

    def __getitem__(self, index: int):
        return mace_data.AtomicData.from_config(self.configs[index], z_table=self.z_table,
                                                cutoff=self.r_max, heads=self.heads)


@dataclass
class LoadedData:
    dataset: Dataset
    isolated_atoms: Dict[int, float] = field(default_factory=dict)  # IsolatedAtom frames: a prior
    source: str = ""
    # Per config of ``dataset``: {"index": its 0-based place in the input (files counted in the
    # order given, every frame counted), "file": the file or None, "config_type": or None}.
    origins: Optional[List[Dict[str, object]]] = None
    n_frames: int = 0  # frames read, IsolatedAtom ones included (where the next file's indices start)


def load_data(paths: Sequence[str], model: torch.nn.Module, head: str, energy_key: Optional[str],
              forces_key: Optional[str] = None) -> LoadedData:
    """Every DATA file as graphs for ``model``'s head ``head``; with ``forces_key``, extxyz graphs
    carry those reference forces too (h5 and LMDB keep the forces mace_prepare_data stored)."""
    parts: List[Dataset] = []
    isolated: Dict[int, float] = {}
    origins: List[Dict[str, object]] = []
    offset = 0
    for path in paths:
        kind = _kind(path)
        if kind == "xyz":
            loaded = _read_ase(path, model, head, energy_key, forces_key)
            parts.append(loaded.dataset)
            isolated.update(loaded.isolated_atoms)
            origins += [{**origin, "index": offset + origin["index"], "file": path} for origin in loaded.origins]
            offset += loaded.n_frames
        else:
            part = _read_prepared(path, kind, _z_table(model), float(model.r_max), model_heads(model), head)
            parts.append(part)
            origins += [{"index": offset + i, "file": path, "config_type": None} for i in range(len(part))]
            offset += len(part)
    source = f"{', '.join(paths)} (energy key '{energy_key}')"
    return LoadedData(parts[0] if len(parts) == 1 else ConcatDataset(parts), isolated, source, origins)


def _kind(path: str) -> str:
    location = Path(path)
    if not location.exists():
        raise E0InputError(f"DATA {path}: no such file or folder.")
    if location.is_dir():
        names = os.listdir(location)
        if location.name.endswith("_lmdb") or any(n.endswith((".aselmdb", ".lmdb")) for n in names):
            return "lmdb"
        if any(n.endswith((".h5", ".hdf5")) for n in names):
            return "h5-folder"
        raise E0InputError(f"DATA {path}: a folder, but with neither LMDB nor h5 files in it.")
    if location.suffix in (".h5", ".hdf5"):
        return "h5"
    if location.suffix in (".aselmdb", ".lmdb"):
        return "lmdb"
    return "xyz"


def _read_prepared(path, kind, z_table, r_max, heads, head):
    options = dict(r_max=r_max, z_table=z_table, heads=heads, head=head)
    try:
        if kind == "h5":
            return mace_data.HDF5Dataset(path, **options)
        if kind == "h5-folder":
            return mace_data.dataset_from_sharded_hdf5(path, **options)
        return mace_data.LMDBDataset(path, **options)
    except Exception as error:  # h5py and lmdb raise their own types
        raise E0InputError(f"DATA {path}: cannot read it as {kind} ({error}).") from None


def _read_frames(path: str):
    try:
        return ase.io.read(path, index=":")
    except Exception as error:  # ase raises many types for unreadable files
        raise E0InputError(f"DATA {path}: ASE cannot read it ({error}).") from None


def _check_elements(where: str, frames, z_table) -> None:
    known = set(z_table.zs)
    for index, atoms in enumerate(frames):
        unknown = sorted(set(int(z) for z in atoms.numbers) - known)
        if unknown:
            raise E0InputError(f"{where}: config {index} contains "
                               f"{', '.join(chemical_symbols[z] for z in unknown)}, which the model has "
                               f"no E0 for (it has {', '.join(chemical_symbols[z] for z in z_table.zs)}).")


def read_compositions(paths: Sequence[str], model: torch.nn.Module, head: str):
    """(counts per config in the model's element order, a label "FILE:INDEX" per config) of
    every DATA file; no energies needed, and no graphs built for extxyz."""
    zs = model_atomic_numbers(model)
    z_table = AtomicNumberTable(zs)
    counts, labels = [], []
    for path in paths:
        kind = _kind(path)
        if kind == "xyz":
            frames = _read_frames(path)
            _check_elements(f"DATA {path}", frames, z_table)
            found = [tuple(int((atoms.numbers == z).sum()) for z in zs) for atoms in frames]
        else:
            found = compositions(_read_prepared(path, kind, z_table, float(model.r_max), model_heads(model), head))
        counts += found
        labels += [f"{path}:{index}" for index in range(len(found))]
    return counts, labels


def _read_ase(path, model, head, energy_key, forces_key=None):
    return graphs_from_atoms(_read_frames(path), model, head, energy_key, f"DATA {path}", forces_key)


def graphs_from_atoms(frames, model: torch.nn.Module, head: str, energy_key: Optional[str],
                      where: str, forces_key: Optional[str] = None) -> LoadedData:
    """ase.Atoms as graphs for ``model``'s ``head``, left unchanged. The energy is
    ``atoms.info[energy_key]``; with ``energy_key`` None or 'energy' (which ASE keeps in the
    calculator, not in info), ``atoms.get_potential_energy()``. IsolatedAtom frames are set apart.
    With ``forces_key``, the graphs carry ``atoms.arrays[forces_key]`` as reference forces (for
    'forces', the calculator's); without it, no forces, as before."""
    z_table = _z_table(model)
    _check_elements(where, frames, z_table)
    from_calculator = energy_key in CALCULATOR_ENERGY_KEYS
    energies = [frame_energy(a, energy_key) for a in frames]
    if all(e is None for e in energies) and from_calculator:
        raise E0InputError(f"{where}: no config has an energy (atoms.get_potential_energy() gives none); "
                           "attach the reference energies, or give the info key that holds them.")
    if all(e is None for e in energies):
        raise E0InputError("{where}: no config has an energy under {energy_key}; the info keys are {keys}.",
                           where=where, energy_key=as_option(energy_key),
                           keys=sorted({k for a in frames for k in a.info}))
    forces = [_reference_forces(a, forces_key) for a in frames] if forces_key else [None] * len(frames)
    if forces_key and all(f is None for f in forces):
        raise E0InputError("{where}: no config has forces under {forces_key}; the arrays keys are {keys}.",
                           where=where, forces_key=as_option(forces_key),
                           keys=sorted({k for a in frames for k in a.arrays}))
    isolated, configs, origins = {}, [], []
    keys = mace_data.KeySpecification(info_keys={"energy": ENERGY_KEY},
                                      arrays_keys={"forces": FORCES_KEY} if forces_key else {})
    for index, (atoms, energy, force) in enumerate(zip(frames, energies, forces)):
        if len(atoms) == 1 and atoms.info.get("config_type") == ISOLATED_ATOM:
            if energy is not None:
                isolated[int(atoms.numbers[0])] = float(energy)
            continue
        origins.append({"index": index, "file": None, "config_type": atoms.info.get("config_type")})
        copy = atoms.copy()  # the caller's Atoms keep their info; mace reads the energy from this key
        copy.info.pop(ENERGY_KEY, None)
        if energy is not None:
            copy.info[ENERGY_KEY] = energy
        if force is not None:
            copy.arrays[FORCES_KEY] = force
        configs.append(mace_data.config_from_atoms(copy, key_specification=keys, head_name=head))
    key = "atoms.get_potential_energy()" if from_calculator else f"energy key '{energy_key}'"
    return LoadedData(ConfigGraphs(configs, z_table, float(model.r_max), model_heads(model)), isolated,
                      f"{where.removeprefix('DATA ')} ({key})", origins, len(frames))


def _reference_forces(atoms, forces_key: str):
    """``atoms.arrays[forces_key]``, or for 'forces' (ASE keeps those in the calculator) the
    calculator's; None if neither."""
    if forces_key in atoms.arrays:
        return atoms.arrays[forces_key]
    if forces_key == "forces" and atoms.calc is not None:
        try:
            return atoms.get_forces()
        except Exception:  # pylint: disable=broad-except  (a calculator without stored forces)
            return None
    return None


CALCULATOR_ENERGY_KEYS = (None, "energy")  # ASE keeps extxyz ``energy=`` in the calculator, not in info


def frame_energy(atoms, energy_key: Optional[str]):
    """A frame's reference energy under ``energy_key`` and no other: ``atoms.info[energy_key]``, or
    for None or 'energy' ``atoms.get_potential_energy()``; None if it has none."""
    if energy_key not in CALCULATOR_ENERGY_KEYS:
        return atoms.info.get(energy_key)
    if atoms.calc is None:
        return atoms.info.get("energy")
    try:
        return float(atoms.get_potential_energy())
    except Exception:  # pylint: disable=broad-except  (a calculator without stored energy)
        return atoms.info.get("energy")


def _z_table(model: torch.nn.Module):
    return AtomicNumberTable(model_atomic_numbers(model))


def data_from(configs, model: torch.nn.Module, head: str, energy_key: Optional[str],
              forces_key: Optional[str] = None) -> LoadedData:
    """``configs`` (a path, a list of paths, or a list of ase.Atoms) as graphs for ``model``'s
    ``head``. ``energy_key=None`` takes ``atoms.get_potential_energy()`` (extxyz ``energy=``).
    ``forces_key``: the graphs carry those reference forces too (``mace-e0 diagnose``)."""
    if isinstance(configs, (str, os.PathLike)):
        configs = [configs]
    configs = list(configs)
    if not configs:
        raise E0InputError("configs: empty; give ase.Atoms or data files.")
    if all(isinstance(c, (str, os.PathLike)) for c in configs):
        return load_data([str(c) for c in configs], model, head, energy_key, forces_key)
    if all(isinstance(c, Atoms) for c in configs):
        return graphs_from_atoms(configs, model, head, energy_key, "the configs passed in", forces_key)
    raise E0InputError("configs: a mix of types; give a list of ase.Atoms, or a list of file paths.")


# -- compositions and loaders ---------------------------------------------------------------------
def shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """This rank's share, strided: every config on exactly one rank, no padding duplicates."""
    if world_size <= 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world_size))


def compositions(dataset: Dataset) -> List[Tuple[int, ...]]:
    """Element counts of every config, in the model's element order, without running the model:
    from configs or h5 arrays where the dataset keeps them, else from the graphs' one-hot nodes."""
    if isinstance(dataset, ConcatDataset):
        return [c for part in dataset.datasets for c in compositions(part)]
    if isinstance(dataset, Subset):
        inner = compositions(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    z_table = getattr(dataset, "z_table", None)
    if z_table is not None and hasattr(dataset, "configs"):  # ConfigGraphs: configs in memory
        return [_counts(config.atomic_numbers, z_table.zs) for config in dataset.configs]
    if z_table is not None and hasattr(dataset, "file") and hasattr(dataset, "batch_size"):  # HDF5Dataset
        return [_counts(dataset.file[f"config_batch_{i // dataset.batch_size}"]
                        [f"config_{i % dataset.batch_size}"]["atomic_numbers"][()], z_table.zs)
                for i in range(len(dataset))]
    return [tuple(int(round(c)) for c in item.node_attrs.sum(dim=0).tolist()) for item in dataset]


def _counts(atomic_numbers, zs) -> Tuple[int, ...]:
    numbers = np.asarray(atomic_numbers)
    return tuple(int(np.sum(numbers == z)) for z in zs)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False):
    """Every config once, in order: no shuffle, no drop_last, no sampler padding."""
    return torch_geometric.dataloader.DataLoader(
        dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=False,
        num_workers=num_workers, pin_memory=pin_memory)
