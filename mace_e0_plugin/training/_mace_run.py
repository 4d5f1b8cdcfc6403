"""Glue to the objects of mace's training run (mace-torch 0.3.x): the foundation model, each
head's share of the training set, and the checkpoints a restart resumes from."""

import os
from typing import Dict, List, Optional

import ase.io
import numpy as np
import torch
from mace.calculators import foundations_models as named
from torch.utils.data import ConcatDataset, Subset

from ..errors import E0InputError
from ..glue import model_atomic_numbers, model_heads, read_e0s, select_head


def foundation_e0s(model, args) -> Dict[int, float]:
    """A foundation model's E0s by element: of ``--foundation_head`` if it has several heads."""
    heads = model_heads(model)
    index = select_head(heads, args.foundation_head) if len(heads) > 1 else 0
    return dict(zip(model_atomic_numbers(model), read_e0s(model, index)))


def read_foundation_e0s(args) -> Dict[int, float]:
    """mace 0.3.16 keeps its foundation model to itself, so we read ``--foundation_model`` again."""
    return foundation_e0s(load_foundation(args), args)


def load_foundation(args):
    source = args.foundation_model
    if os.path.isfile(source):
        return torch.load(source, map_location="cpu", weights_only=False)
    options = dict(device="cpu", default_dtype=args.default_dtype)
    if source in getattr(named, "polar_model_names", []):
        return named.mace_polar(model=source, return_raw_model=True, **options)
    if source in [name for name in named.mace_mp_names if name]:
        return named.mace_mp(model=source, return_raw_model=True, **options)
    if source in ("small_off", "medium_off", "large_off"):
        return named.mace_off(model=source.split("_")[0], return_raw_model=True, **options)
    if source == "mace_omol":
        return named.mace_omol(return_raw_model=True, **options)
    raise E0InputError(f"--foundation_model={source}: no such file, and not a model name mace knows.")


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


def restored_from_checkpoint(args, checkpoint_handler) -> bool:
    if not getattr(args, "restart_latest", False) or checkpoint_handler is None:
        return False
    io = checkpoint_handler.io
    if not os.path.isdir(io.directory):
        return False
    prefix = f"{io.tag}_epoch-"
    return any(name.startswith(prefix) and name.endswith(".pt") for name in os.listdir(io.directory))


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
