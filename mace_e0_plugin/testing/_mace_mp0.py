"""A stand-in for MACE-MP-0 medium: its published architecture and E0 table, random weights.

MACE-MP-0's weights cannot be downloaded on the machines this project runs on, yet the estimate
has to be measured and tested at the scale of the foundation the mission is about: 89 elements,
about 4.7 M parameters, r_max 6 A. This builds that model in memory, seeded, in a second or two;
it is never stored as a file in the project.

Sources of the numbers:

- Architecture: ACEsuit/mace-mp, ``mace_mp_0/2023-12-03-mace-128-L1.sh`` (the training command of
  MACE-MP-0 "medium"): ScaleShiftMACE, RealAgnosticResidualInteractionBlock first and after,
  2 interactions, correlation 3, max_ell 3, r_max 6.0, max_L 1, num_channels 128 (so hidden irreps
  128x0e + 128x1o), num_radial_basis 10, MLP_irreps 16x0e, rms_forces_scaling; the rest are
  mace_run_train's defaults: num_cutoff_basis 5, radial_MLP [64, 64, 64], bessel radial basis,
  SiLU gate.
- Elements and E0s: the ``mptrj-gga-ggapu-statistics.json`` that command reads. Its 89 elements
  are Z = 1-83 and 89-94 (no Po-Ra: MPtrj has none), and the E0s are the ones MACE-MP-0 carries in
  ``atomic_energies_fn``; mace 0.3.16's installed package does not hold them. Copied here from
  mdi-group/2025-04-mace-field ``scripts/Ferroelectrics/get_ferroelectric_dataset.py``
  (``HARDCODED_ISOLATED_E0S``, full precision, H -3.667168021358939 eV); a matsciml example that
  loads a MACE-MP-0 checkpoint lists the same 89 values to 1e-4 eV.
- avg_num_neighbors, scale and shift: from the same statistics file, so the same in MACE-MP-0 small
  and medium; the matsciml example sets these values to load MACE-MP-0 small's checkpoint, and
  public ports of MACE-MP-0 to other frameworks read the same from the released models:
  61.964672446250916, 0.8041538754478097, 0.16409696359187365.
- The parameter count this gives, 4,688,656, is the released medium model's (the mace_mp_0
  release notes give 3,847,696 / 4,688,656 / 5,725,072 for small / medium / large).
"""

from typing import Dict

import mace  # noqa: F401  (first: it sets up torch.load for e3nn before e3nn is imported)
import numpy as np
import torch
from e3nn import o3
from mace import modules

from ..glue import default_dtype

MP0_MEDIUM_ARCHITECTURE = dict(
    r_max=6.0,
    num_bessel=10,
    num_polynomial_cutoff=5,
    max_ell=3,
    num_interactions=2,
    correlation=3,
    hidden_irreps="128x0e+128x1o",
    MLP_irreps="16x0e",
    radial_MLP=[64, 64, 64],
    interaction="RealAgnosticResidualInteractionBlock",
)
MP0_AVG_NUM_NEIGHBORS = 61.964672446250916
MP0_SCALE = 0.8041538754478097
MP0_SHIFT = 0.16409696359187365
# what build_mace_mp0_medium_like gives: the released MACE-MP-0 medium's count (see above)
MP0_MEDIUM_PARAMETERS = 4_688_656

# MACE-MP-0's E0s (eV), by atomic number: see the module docstring for where they come from.
MP0_E0S: Dict[int, float] = {
    1: -3.667168021358939, 2: -1.3320953124042916, 3: -3.482100566595956, 4: -4.736697230897597,
    5: -7.724935420523256, 6: -8.405573550273285, 7: -7.360100452662763, 8: -7.28459863421322,
    9: -4.896490881731322, 10: 1.3917755836700962e-12, 11: -2.7593613569762425,
    12: -2.814047612069227, 13: -4.846881245288104, 14: -7.694793133351899,
    15: -6.9632957911820235, 16: -4.672630400190884, 17: -2.8116892814008096,
    18: -0.06259504416367478, 19: -2.6176454856894793, 20: -5.390461060484104,
    21: -7.8857952163517675, 22: -10.268392986214433, 23: -8.665147785496703,
    24: -9.233050763772013, 25: -8.304951520770791, 26: -7.0489865771593765,
    27: -5.577439766222147, 28: -5.172747618813715, 29: -3.2520726958619472,
    30: -1.2901611618726314, 31: -3.527082192997912, 32: -4.70845955030298,
    33: -3.9765109025623238, 34: -3.886231055836541, 35: -2.5184940099633986,
    36: 6.766947645687137, 37: -2.5634958965928316, 38: -4.938005211501922,
    39: -10.149818838085771, 40: -11.846857579882572, 41: -12.138896361658485,
    42: -8.791678800595722, 43: -8.78694939675911, 44: -7.78093221529871,
    45: -6.850021409115055, 46: -4.891019073240479, 47: -2.0634296773864045,
    48: -0.6395695518943755, 49: -2.7887442084286693, 50: -3.818604275441892,
    51: -3.587068329278862, 52: -2.8804045971118897, 53: -1.6355986842433357,
    54: 9.846723842807721, 55: -2.765284507132287, 56: -4.990956432167774,
    57: -8.933684809576345, 58: -8.735591176647514, 59: -8.018966025544966,
    60: -8.251491970213372, 61: -7.591719594359237, 62: -8.169659881166858,
    63: -13.592664636171698, 64: -18.517523458456985, 65: -7.647396572993602,
    66: -8.122981037851925, 67: -7.607787319678067, 68: -6.85029094445494,
    69: -7.8268821327130365, 70: -3.584786591677161, 71: -7.455406192077973,
    72: -12.796283502572146, 73: -14.108127281277586, 74: -9.354916969477486,
    75: -11.387537567890853, 76: -9.621909492152557, 77: -7.324393429417677,
    78: -5.3046964808341945, 79: -2.380092582080244, 80: 0.24948924158195362,
    81: -2.3239789120665026, 82: -3.730042357127322, 83: -3.438792347649683,
    89: -5.062878214511315, 90: -11.02462566385297, 91: -12.265613551943261,
    92: -13.855648206100362, 93: -14.933092020258243, 94: -15.282826131998245,
}


def build_mace_mp0_medium_like(seed: int = 0, dtype: str = "float64"):
    """A ScaleShiftMACE shaped like MACE-MP-0 medium (89 elements, ~4.7 M parameters, r_max 6 A)
    with MACE-MP-0's E0s, one head ("Default"), and random weights drawn from ``seed``."""
    spec = MP0_MEDIUM_ARCHITECTURE
    with default_dtype(getattr(torch, dtype)):
        torch.manual_seed(seed)
        atomic_numbers = sorted(MP0_E0S)
        block = modules.interaction_classes[spec["interaction"]]
        model = modules.ScaleShiftMACE(
            r_max=spec["r_max"], num_bessel=spec["num_bessel"],
            num_polynomial_cutoff=spec["num_polynomial_cutoff"], max_ell=spec["max_ell"],
            interaction_cls=block, interaction_cls_first=block, num_interactions=spec["num_interactions"],
            num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps(spec["hidden_irreps"]),
            MLP_irreps=o3.Irreps(spec["MLP_irreps"]),
            atomic_energies=np.array([[MP0_E0S[z] for z in atomic_numbers]]),
            avg_num_neighbors=MP0_AVG_NUM_NEIGHBORS, atomic_numbers=atomic_numbers,
            correlation=spec["correlation"], gate=torch.nn.functional.silu,
            radial_MLP=list(spec["radial_MLP"]), radial_type="bessel", heads=["Default"],
            atomic_inter_scale=[MP0_SCALE], atomic_inter_shift=[MP0_SHIFT])
    return model
