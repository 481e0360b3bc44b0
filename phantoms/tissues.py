"""Tissue labels and their physical properties: CT attenuation and MR relaxation.

The anatomy is painted as a label volume (uint8); CT and MR are rendered from it through per-case lookup tables,
so both modalities share the same geometry and the same sub-tissue texture (for instance marrow fat fraction:
higher fat lowers the CT number and brightens a T1-weighted MR), which is what makes MR -> CT learnable.

Values are literature-typical (ICRU/clinical CT numbers; 1.5 T relaxation times from standard MR tables); they
are jittered per case so no two phantoms share a lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class T(IntEnum):
    """Tissue labels (uint8 values in the label volume)."""

    AIR = 0  # outside the body and air spaces inside it
    FAT_SC = 1  # subcutaneous fat
    FAT = 2  # visceral / intermuscular / orbital fat
    MUSCLE = 3
    SKIN = 4
    SOFT = 5  # generic soft tissue, organ walls
    GM = 6
    WM = 7
    CSF = 8
    LIVER = 9
    SPLEEN = 10
    KIDNEY = 11
    MEDULLA = 12  # renal medulla
    MYOCARD = 13
    BLOOD = 14  # heart chambers and large vessels
    URINE = 15  # bladder, renal pelvis, gallbladder (fluid)
    BOWEL = 16  # small-bowel and stomach content
    STOOL = 17  # colon content
    LUNG = 18
    MARROW = 19
    CORTICAL = 20
    CORTICAL_DENSE = 21  # skull tables, petrous bone, femoral shaft
    TEETH = 22
    DISC = 23
    CARTILAGE = 24
    METAL = 25
    VITREOUS = 26
    LENS = 27
    GLAND = 28  # thyroid, glandular breast
    PAROTID = 29
    CORD = 30  # spinal cord, brainstem, nerves
    PROSTATE = 31
    UTERUS = 32
    PANCREAS = 33
    GAS = 34  # air inside the body (airway, bowel gas, sinuses): separate label for statistics, same physics


N_LABELS = 36


@dataclass(frozen=True)
class CTProps:
    """CT number: mean (HU), +/- jitter of the mean per case, texture amplitude (HU per unit of the texture field)."""

    mean: float
    jitter: float
    texture: float


@dataclass(frozen=True)
class MRProps:
    """Proton density (relative), T1 and T2 at 1.5 T (ms), T2* (ms), texture amplitude (fraction)."""

    pd: float
    t1: float
    t2: float
    t2s: float
    texture: float = 0.04


CT_TABLE: dict[T, CTProps] = {
    T.AIR: CTProps(-1000, 0, 0),
    T.FAT_SC: CTProps(-100, 12, 8),
    T.FAT: CTProps(-95, 12, 12),
    T.MUSCLE: CTProps(50, 6, 5),
    T.SKIN: CTProps(35, 8, 4),
    T.SOFT: CTProps(40, 8, 6),
    T.GM: CTProps(40, 3, 2),
    T.WM: CTProps(29, 3, 2),
    T.CSF: CTProps(8, 3, 1),
    T.LIVER: CTProps(60, 8, 4),
    T.SPLEEN: CTProps(50, 5, 3),
    T.KIDNEY: CTProps(35, 5, 3),
    T.MEDULLA: CTProps(30, 5, 3),
    T.MYOCARD: CTProps(48, 5, 3),
    T.BLOOD: CTProps(45, 5, 2),
    T.URINE: CTProps(8, 5, 2),
    T.BOWEL: CTProps(25, 10, 12),
    T.STOOL: CTProps(-60, 40, 90),
    T.LUNG: CTProps(-820, 25, 25),
    T.MARROW: CTProps(290, 40, 55),
    T.CORTICAL: CTProps(1300, 120, 150),
    T.CORTICAL_DENSE: CTProps(1650, 100, 120),
    T.TEETH: CTProps(2550, 150, 200),
    T.DISC: CTProps(90, 10, 10),
    T.CARTILAGE: CTProps(160, 40, 60),
    T.METAL: CTProps(6000, 0, 0),  # far above the 3071 clip so partial-volume edges stay saturated
    T.VITREOUS: CTProps(10, 4, 1),
    T.LENS: CTProps(85, 10, 2),
    T.GLAND: CTProps(85, 15, 8),
    T.PAROTID: CTProps(-10, 15, 10),
    T.CORD: CTProps(35, 4, 2),
    T.PROSTATE: CTProps(40, 5, 4),
    T.UTERUS: CTProps(45, 5, 4),
    T.PANCREAS: CTProps(40, 6, 10),
    T.GAS: CTProps(-990, 5, 5),
}

MR_TABLE: dict[T, MRProps] = {
    T.AIR: MRProps(0.0, 1000, 1, 0.1, 0),
    T.FAT_SC: MRProps(1.0, 290, 130, 60, 0.03),
    T.FAT: MRProps(0.95, 290, 130, 60, 0.05),
    T.MUSCLE: MRProps(0.78, 1000, 40, 30, 0.03),
    T.SKIN: MRProps(0.75, 700, 45, 25, 0.03),
    T.SOFT: MRProps(0.8, 900, 60, 35, 0.05),
    T.GM: MRProps(0.86, 1100, 95, 60, 0.02),
    T.WM: MRProps(0.72, 650, 75, 50, 0.02),
    T.CSF: MRProps(1.0, 4000, 2000, 1000, 0.01),
    T.LIVER: MRProps(0.75, 580, 45, 25, 0.03),
    T.SPLEEN: MRProps(0.82, 1050, 65, 40, 0.03),
    T.KIDNEY: MRProps(0.85, 950, 80, 45, 0.03),
    T.MEDULLA: MRProps(0.9, 1400, 110, 60, 0.03),
    T.MYOCARD: MRProps(0.8, 950, 45, 30, 0.03),
    T.BLOOD: MRProps(0.9, 1450, 250, 100, 0.05),
    T.URINE: MRProps(1.0, 3000, 1500, 800, 0.01),
    T.BOWEL: MRProps(0.85, 1500, 250, 60, 0.15),
    T.STOOL: MRProps(0.6, 700, 60, 20, 0.25),
    T.LUNG: MRProps(0.15, 1200, 40, 1.5, 0.1),
    T.MARROW: MRProps(0.9, 400, 90, 20, 0.12),
    T.CORTICAL: MRProps(0.05, 300, 0.5, 0.3, 0),
    T.CORTICAL_DENSE: MRProps(0.04, 300, 0.4, 0.3, 0),
    T.TEETH: MRProps(0.02, 300, 0.3, 0.2, 0),
    T.DISC: MRProps(0.85, 1100, 100, 50, 0.05),
    T.CARTILAGE: MRProps(0.7, 1000, 30, 15, 0.05),
    T.METAL: MRProps(0.0, 1000, 1, 0.1, 0),
    T.VITREOUS: MRProps(1.0, 3500, 1500, 800, 0.01),
    T.LENS: MRProps(0.6, 800, 30, 20, 0.02),
    T.GLAND: MRProps(0.8, 800, 70, 40, 0.05),
    T.PAROTID: MRProps(0.88, 500, 85, 45, 0.06),
    T.CORD: MRProps(0.72, 750, 75, 45, 0.02),
    T.PROSTATE: MRProps(0.85, 1100, 95, 50, 0.06),
    T.UTERUS: MRProps(0.85, 1200, 110, 55, 0.05),
    T.PANCREAS: MRProps(0.8, 600, 50, 30, 0.06),
    T.GAS: MRProps(0.0, 1000, 1, 0.1, 0),
}

#: Labels whose MR signal is altered by flowing blood (dark on spin echo, bright on gradient echo).
FLOW_LABELS = (T.BLOOD,)
#: Labels that are fatty and so do not lengthen their T1 with field strength.
FAT_LABELS = (T.FAT_SC, T.FAT, T.PAROTID)
FLUID_LABELS = (T.CSF, T.URINE, T.VITREOUS)
AIR_LABELS = (T.AIR, T.GAS)
BONE_LABELS = (T.MARROW, T.CORTICAL, T.CORTICAL_DENSE, T.TEETH)


def label_set(*labels: T) -> np.ndarray:
    """Boolean lookup table over all label values (index with a label volume to test membership fast)."""
    lut = np.zeros(256, dtype=bool)
    lut[[int(v) for v in labels]] = True
    return lut


def ct_lookup(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-case CT mean and texture-amplitude lookup tables (float32, indexed by label)."""
    mean = np.zeros(256, dtype=np.float32)
    tex = np.zeros(256, dtype=np.float32)
    for label, props in CT_TABLE.items():
        mean[label] = props.mean + props.jitter * rng.uniform(-1.0, 1.0)
        tex[label] = props.texture * rng.uniform(0.7, 1.3)
    return mean, tex
