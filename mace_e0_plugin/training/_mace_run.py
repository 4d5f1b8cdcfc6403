"""The one module that knows mace's run objects (mace-torch 0.3.x) beyond the wrapped functions:
the foundation model (a file, or a name mace's own loaders know), each head's share of the training
set, and the checkpoints (their names are read by mace's own ``CheckpointIO``, here only)."""

import os
from typing import Dict, List, Optional, Tuple

import ase.io
import numpy as np
import torch
from mace.calculators import foundations_models as named
from torch.utils.data import ConcatDataset, Subset

from ..errors import E0InputError
from ..glue import model_atomic_numbers, model_heads, read_e0s, select_head


def foundation_e0s(model, foundation_head: Optional[str] = None) -> Dict[int, float]:
    """A foundation model's E0s by element: of ``foundation_head`` if it has several heads."""
    heads = model_heads(model)
    index = select_head(heads, foundation_head) if len(heads) > 1 else 0
    return dict(zip(model_atomic_numbers(model), read_e0s(model, index)))


# mace's loaders of named foundation models, and where each lists its names (mace_mp_names is new
# in mace-torch 0.3.14: an older mace lists none, and only files are read).
NAMED_LOADERS = (("mace_polar", "polar_model_names"), ("mace_mp", "mace_mp_names"))
OFF_NAMES = ("small_off", "medium_off", "large_off")  # mace_off(model="small"), as run_train reads them
OMOL_NAMES = ("mace_omol",)


def load_foundation(source: str, default_dtype: str):
    """The foundation model mace trains from: a file, or a model name, loaded by mace's own function
    for it (mace 0.3.x keeps the model it loaded to itself)."""
    if os.path.isfile(source):
        return unpickle(source)
    options = dict(device="cpu", default_dtype=default_dtype, return_raw_model=True)
    for loader, names in NAMED_LOADERS:
        if source in [name for name in getattr(named, names, None) or () if name]:
            return getattr(named, loader)(model=source, **options)
    if source in OFF_NAMES:
        return named.mace_off(model=source.split("_")[0], **options)
    if source in OMOL_NAMES and hasattr(named, "mace_omol"):
        return named.mace_omol(**options)
    raise E0InputError(f"--foundation_model={source}: no such file, and not a model name this mace-torch knows.")


def datasets_by_head(dataset, heads: List[str]) -> Dict[str, object]:
    """mace concatenates one dataset per head (replay pt_head data included); each config
    carries its head's index. Returns each head's dataset, the graphs training already built."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    by_head: Dict[str, list] = {}
    for part in parts:
        if len(part) > 0:
            by_head.setdefault(heads[int(part[0].head)], []).append(part)
    return {head: p[0] if len(p) == 1 else ConcatDataset(p) for head, p in by_head.items()}


def without_replication(dataset, n_original: Optional[int]):
    """Multihead fine-tuning repeats the fine-tuning configs to balance a large replay set
    (``train += train * k``). Each config counts once: keep the first copy."""
    if not n_original or len(dataset) <= n_original or len(dataset) % n_original:
        return dataset
    if not (dataset[0].positions.shape == dataset[n_original].positions.shape
            and bool((dataset[0].positions == dataset[n_original].positions).all())):
        return dataset
    return Subset(dataset, range(n_original))


def checkpoint_files(checkpoint_io) -> list:
    """mace's reading of every checkpoint file name in ``checkpoint_io``'s directory with its tag:
    ``CheckpointPathInfo(path, tag, epochs, swa)`` each."""
    if not os.path.isdir(checkpoint_io.directory):
        return []
    found = [checkpoint_io._parse_checkpoint_path(path)  # pylint: disable=protected-access
             for path in checkpoint_io._list_file_paths()]  # pylint: disable=protected-access
    return [info for info in found if info and info.tag == checkpoint_io.tag]


def latest_checkpoint(checkpoint_io, swa: bool) -> Optional[Tuple[str, int]]:
    """(path, epoch) of the checkpoint mace's ``load_latest(swa=swa)`` loads, or None if there is none."""
    mine = [info for info in checkpoint_files(checkpoint_io) if info.swa == swa]
    if not mine:
        return None
    latest = max(mine, key=lambda info: info.epochs)
    return latest.path, latest.epochs


def unpickle(path: str):
    """A model or checkpoint file, unpickled as mace itself loads them (so opening one runs code from it)."""
    return torch.load(path, map_location="cpu", weights_only=False)


# Angstrom: positions read back from extxyz match a graph's to this (float32 graphs keep ~1e-6).
POSITION_TOLERANCE = 1e-4


def locate_in_files(dataset, found, train_files) -> list:
    """The suspicious configs ``found`` (positions in the head's training set, as mace holds it:
    after its validation split) with their place in the extxyz training file(s) instead, matched by
    species and positions, and the file's config_type; those not found keep the training-set place.
    The files are read only when there is something to name."""
    if not found:
        return []
    frames = []  # (file, index in the input counting files in order, Atoms)
    offset = 0
    for path in train_files:
        try:
            atoms_list = ase.io.read(path, index=":")
        except Exception:  # h5, LMDB, or unreadable: keep the training-set places
            return list(found)
        frames += [(path, offset + i, atoms) for i, atoms in enumerate(atoms_list)]
        offset += len(atoms_list)
    located = []
    for entry in found:
        graph = dataset[entry["position"]]
        positions = graph.positions.detach().double().cpu().numpy()
        for path, index, atoms in frames:
            if len(atoms) == len(positions) and np.allclose(atoms.positions, positions, atol=POSITION_TOLERANCE):
                entry = {**entry, "index": index, "file": path, "config_type": atoms.info.get("config_type"),
                         "located": True}
                break
        located.append(entry)
    return located
