"""Composition-stratified order of configs, for estimating E0s from part of a large set (pure)."""

import random
from collections import defaultdict
from typing import Dict, Hashable, List, Sequence


def stratified_order(compositions: Sequence[Hashable], seed: int = 0) -> List[int]:
    """An order of the configs in which every prefix is a composition-stratified sample.

    First one config of every composition (the commonest first), so that even a short prefix
    reaches the rank the whole set has; then the rest, interleaved so that each composition
    appears in proportion to its share of the data. Deterministic for a given seed.
    """
    rng = random.Random(seed)
    strata: Dict[Hashable, List[int]] = defaultdict(list)
    for index, composition in enumerate(compositions):
        strata[composition].append(index)
    groups = sorted(strata.values(), key=lambda members: (-len(members), members[0]))
    for members in groups:
        rng.shuffle(members)
    order = [members[0] for members in groups]
    rest = [((position + rng.random()) / len(members), index)
            for members in groups for position, index in enumerate(members) if position > 0]
    order += [index for _, index in sorted(rest)]
    return order
