"""A whole-body anatomical model, from the vertex to the thighs, painted as tissue labels.

One model serves every region: a region only chooses the z-window (the scanned slab) and shapes outside it
are never evaluated (their bounding boxes are empty). Every size and position is drawn per patient, so cases
differ in height, girth, fat, breathing state, organ size and position, bladder filling, bowel gas, teeth...

Frame: x to the patient's left, y to the posterior, z to the superior (mm); z = 0 at the vertex. Structures
are built from ellipsoids, superquadrics, tubes along z with varying cross-sections and chains of capsules.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from phantoms.canvas import Canvas, profile, rotation
from phantoms.tissues import T

SOFT_LIKE = (T.FAT_SC, T.FAT, T.MUSCLE, T.SOFT, T.SKIN)
BODY_FILL = (T.FAT_SC, T.FAT, T.MUSCLE, T.SOFT)


@dataclass
class Patient:
    """Per-case body parameters (all drawn from the case's seeded generator)."""

    hs: float  # height scale (every z landmark)
    hc: float  # head size scale (x, y of the head)
    ws: float  # girth scale (trunk x)
    ap: float  # antero-posterior scale (trunk y)
    fat: float  # subcutaneous fat over the abdomen, mm
    belly: float  # visceral fat / belly, 0..1
    male: bool
    age: float  # 0 young .. 1 old (marrow fat, calcified cartilage)
    breath: float  # diaphragm shift, mm (+ = inspiration, dome lower)
    bladder: float  # filling 0..1
    gas: float  # bowel gas 0..1
    arms_down: bool  # arms along the body (else raised above the head, out of any trunk slab)
    scoliosis: float  # lateral spine deviation amplitude, mm
    missing_teeth: frozenset = field(default_factory=frozenset)
    mouth_air: bool = True
    breasts: float = 0.0  # breast size 0..1 (female)
    uterus: bool = False


def draw_patient(rng: np.random.Generator, region: str) -> Patient:
    """Draw a patient; the region only nudges things that depend on how such patients are scanned."""
    male = bool(rng.random() < 0.55)
    fat = float(np.clip(rng.lognormal(math.log(16 if male else 22), 0.45), 4, 55))
    return Patient(
        hs=float(rng.uniform(0.93, 1.07)),
        hc=float(rng.uniform(0.93, 1.06)),
        ws=float(rng.uniform(0.86, 1.12)) * (1.03 if male else 0.97),
        ap=float(rng.uniform(0.88, 1.12)),
        fat=fat,
        belly=float(np.clip(rng.normal(0.35 + fat / 80, 0.2), 0, 1)),
        male=male,
        age=float(rng.uniform(0, 1)),
        breath=float(rng.uniform(-12, 18)),
        bladder=float(rng.uniform(0.1, 1.0)),
        gas=float(rng.uniform(0.1, 1.0)),
        arms_down=region == "HN",
        scoliosis=float(abs(rng.normal(0, 3))),
        missing_teeth=frozenset(int(i) for i in np.nonzero(rng.random(32) < 0.12)[0]),
        mouth_air=bool(rng.random() < 0.5),
        breasts=0.0 if male else float(rng.uniform(0.2, 1.0)),
        uterus=not male,
    )


SKULL_THICKNESS_MM = (3.5, 9.0)
NO_DIPLOE_PROBABILITY = 0.35


def skull_layers(rng: np.random.Generator) -> tuple[float, float, float]:
    """Skull thickness and outer / inner table thickness (mm) for one patient, when skulls vary.

    Real calvaria range from thick ones with bright fatty diploe to thin shells of compact bone with hardly any
    marrow (which T1 shows as one dark band); the fixed phantom skull (5.5-8 mm, 1.8 and 1.7 mm tables) only
    covers the first kind. Here a third of the skulls have no diploe at all, the rest a random marrow fraction.
    """
    thick = float(rng.uniform(*SKULL_THICKNESS_MM))
    if rng.random() < NO_DIPLOE_PROBABILITY:
        return thick, thick, 0.0
    marrow = float(rng.uniform(0.15, 0.6)) * thick
    outer = float(rng.uniform(0.4, 0.6)) * (thick - marrow)
    return thick, outer, thick - marrow - outer


CSF_RIM_MM = (2.0, 6.0)  # subarachnoid CSF between the inner table and the cortex: young to atrophic
FIXED_SCALP_MM = 5.5  # skin to the outer table over the cranium of every plain phantom
SCALP_MM = (FIXED_SCALP_MM, FIXED_SCALP_MM)  # the range drawn from when heads vary: the fixed one unless asked
MAX_SCALP_MM = 15.0  # thicker scalps would leave too little cranium for the skull, CSF and brain
SULCUS_WIDTH = (0.10, 0.30)  # half-width of the sulci as a level of the folded texture (0.13: the fixed brain)
VENTRICLE_SCALE = ((0.7, 2.6), (0.9, 1.3), (0.8, 1.8))  # lateral ventricles: width, length, height factors


@dataclass
class BrainLayout:
    """How much CSF a brain holds: its rim under the skull, its sulci and its ventricles."""

    csf_rim: float = 2.5
    sulcus_width: float = 0.13
    ventricle_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    third_ventricle_scale: float = 1.0


def brain_layout(rng: np.random.Generator, csf_rim_mm: tuple[float, float] = CSF_RIM_MM) -> BrainLayout:
    """The brain's CSF spaces for one patient, when anatomy varies.

    Radiotherapy patients are mostly old, and atrophy widens the CSF rim, the sulci and the ventricles several-fold;
    the fixed brain has one young layout. In T1 every CSF space is dark, like a compact skull, so a network that
    has seen only small fixed ventricles may call large real ones bone; here their size varies per case.
    `csf_rim_mm` bounds the rim under the skull (the same draws map onto it).
    """
    atrophy = float(rng.uniform(0.0, 1.0))  # one factor drives all spaces together, as age does, plus jitter
    jitter = lambda lo_hi: float(np.clip(lo_hi[0] + (atrophy + rng.normal(0, 0.15)) * (lo_hi[1] - lo_hi[0]), *lo_hi))
    return BrainLayout(
        csf_rim=jitter(csf_rim_mm),
        sulcus_width=jitter(SULCUS_WIDTH),
        ventricle_scale=tuple(jitter(r) for r in VENTRICLE_SCALE),
        third_ventricle_scale=jitter((0.8, 2.5)),
    )


def fat_planes(tex: np.ndarray, level: float, width: float) -> np.ndarray:
    """Thin curved sheets (a level set of the smooth texture field): fascial fat planes between muscles."""
    return np.abs(tex - level) < width


class Body:
    """The patient's profiles along z (outline, cavity, spine) and the painters that use them."""

    def __init__(self, p: Patient, seed: int) -> None:
        self.p = p
        self.seed = int(seed)
        self.rng = self._stream("init")
        self.arms_in_body = True  # False: arms are painted separately (present in one modality only)
        self.vary_head = False  # True: skull layers and brain CSF spaces drawn per case (anatomical variability)
        self.csf_rim_mm = CSF_RIM_MM  # range of the CSF rim under the skull when heads vary
        self.scalp_mm = SCALP_MM  # range of the scalp's thickness over the cranium when heads vary
        s, ws, ap = p.hs, p.ws, p.ap
        shoulder = (1.0, 1.0) if p.arms_down else (0.78, 0.88)
        zk = (
            np.array([-130, -175, -215, -245, -262, -282, -310, -345, -400, -470, -560, -650, -720, -790, -850, -885])
            * s
        )
        self.muscle = profile(
            zk,
            np.zeros(zk.size),
            [15, 16, 17, 20, 22, 25, 28, 28, 25, 20, 18, 18, 20, 25, 28, 30],
            np.array(
                [53, 53, 53, 57, 72, 118 * shoulder[0], 158 * shoulder[1], 162, 150, 148, 140, 140, 150, 165, 160, 130]
            )
            * ws,
            np.array([48, 46, 45, 46, 52, 65, 80, 92, 100, 100, 95, 90, 85, 85, 80, 60]) * ws * ap,
            np.array([58, 58, 57, 56, 60, 70, 85, 95, 100, 95, 85, 85, 90, 105, 110, 85]) * ws * ap,
        )
        fat_rel = profile(zk, [0.2, 0.2, 0.22, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.9, 1.0, 1.0, 1.0, 0.95, 0.9])
        belly = profile(np.array([-470, -560, -650, -760, -820]) * s, [0.0, 0.6, 1.0, 0.6, 0.0])
        self.fat_rel, self.belly_rel = fat_rel, belly
        # back: depth of the spine's body centre from the posterior muscle outline
        self.back = profile(
            np.array([-140, -200, -260, -300, -420, -520, -600, -700, -760, -820, -860]) * s,
            np.array([40, 38, 40, 55, 58, 60, 66, 68, 62, 45, 30]) * ap,
        )
        self.z_dome_r = -455 * s - p.breath
        self.z_dome_l = -470 * s - p.breath
        self.z_apex = -262 * s
        self.z_floor = -845 * s
        ck = np.array([-262, -275, -300, -330, -380, -450, -560, -650, -720, -790, -845]) * s
        self._cav_a = profile(ck, np.array([12, 45, 80, 105, 122, 128, 122, 120, 120, 108, 60]) * ws)
        self._cav_ba = profile(ck, np.array([10, 30, 50, 68, 80, 86, 85, 80, 72, 62, 35]) * ws * ap)

    # ------------------------------------------------------------------------------------- profiles
    def outline(self, z: np.ndarray) -> list[np.ndarray]:
        """Outer skin of neck and trunk: the muscle outline plus subcutaneous fat (and a belly in front)."""
        cx, cy, a, ba, bp = self.muscle(z)
        f = self.p.fat * self.fat_rel(z)[0]
        belly = 45.0 * self.p.belly * self.belly_rel(z)[0]
        return [cx, cy, a + f, ba + f * 1.1 + belly, bp + f * 0.8]

    def spine_xy(self, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Centre of the vertebral bodies (x, y) at z."""
        z = np.asarray(z, dtype=np.float64)
        _, cy, _, _, bp = self.muscle(z)
        y = cy + bp - self.back(z)[0]
        x = self.p.scoliosis * np.sin((z + 300 * self.p.hs) / (260 * self.p.hs) * np.pi)
        return x, y

    def cavity(self, z: np.ndarray) -> list[np.ndarray]:
        """Thoraco-abdominal cavity (lungs above the diaphragm, viscera below)."""
        cx, cy, a, ba, bp = self.muscle(z)
        ac = np.minimum(self._cav_a(z)[0], a - 13)
        bac = np.minimum(self._cav_ba(z)[0], ba - 14)
        _, ys = self.spine_xy(z)
        bpc = np.maximum(ys + 24 - cy, 5)
        return [cx, cy, ac, bac, bpc]

    def dome(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """z of the diaphragm surface above (x, y): two domes, sloping to deep posterior recesses."""
        w = 1.0 / (1.0 + np.exp(-X / 25.0))
        d0 = self.z_dome_r + (self.z_dome_l - self.z_dome_r) * w
        A = 125.0 * self.p.ws
        side = (np.abs(X) - 25.0) / A
        side = np.where(side > 0, side, 0.0)
        yy = (Y - 25.0) / (90.0 * self.p.ap)
        post = np.where(yy > 0, yy, 0.0)
        ant = np.where(yy < 0, yy, 0.0)
        return d0 - 70.0 * side * side - 55.0 * post * post - 12.0 * ant * ant

    def zs(self, v: float) -> float:
        return v * self.p.hs

    # ------------------------------------------------------------------------------------- painting
    def _stream(self, name: str) -> np.random.Generator:
        """A generator of its own for each group of structures: what one group draws (or skips, when it lies
        outside the slab) never changes another, so the same patient looks the same in every slab and grid."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    def paint(self, cv: Canvas) -> None:
        """Everything, in an order where later structures overwrite earlier ones."""
        for name in (
            "paint_outline",
            "paint_head",
            "paint_neck",
            "paint_thorax",
            "paint_abdomen",
            "paint_pelvis",
            "paint_spine",
            "paint_ribs",
            "paint_shoulders",
        ):
            self.rng = self._stream(name)
            getattr(self, name)(cv)

    # ------------------------------------------------------------------------------------- outline
    def paint_outline(self, cv: Canvas) -> None:
        p, s = self.p, self.p.hs
        # trunk and neck: fat, skin at the surface, muscle wall inside, intermuscular fat streaks
        box, F = cv.ztube(-130 * s, -885 * s, self.outline, p=2)
        if box is not None:
            cv.fill(T.FAT_SC, box, F <= 1)
            cv.fill(T.SKIN, box, (F > 0.955) & (F <= 1))
        box, F = cv.ztube(-130 * s, -885 * s, self.muscle, p=2)
        if box is not None:
            inside = F <= 1
            cv.fill(T.MUSCLE, box, inside, only=(T.FAT_SC,))
            if cv.texture is not None:
                cv.fill(T.FAT, box, inside & fat_planes(cv.tex(box), 1.3, 0.07), only=(T.MUSCLE,))
        # thighs below the groin
        for side in (-1, 1):
            cxt = side * (66 * p.ws + 0.6 * p.fat)

            def thigh(z, cxt=cxt, outer=True):
                f = p.fat * 0.9 if outer else 0.0
                r = 72 * p.ws + f - 0.05 * (-870 * s - z)
                return [np.full_like(z, cxt), np.full_like(z, 15.0), r, r * 0.95, r]

            box, F = cv.ztube(-840 * s, -1300 * s, thigh)
            if box is not None:
                cv.fill(T.FAT_SC, box, F <= 1, only=(T.AIR,))
                cv.fill(T.SKIN, box, (F > 0.96) & (F <= 1), only=(T.FAT_SC,))
            box, F = cv.ztube(-840 * s, -1300 * s, lambda z, t=thigh: t(z, outer=False))
            if box is not None:
                cv.fill(T.MUSCLE, box, F <= 1, only=(T.FAT_SC,))
                if cv.texture is not None:
                    cv.fill(T.FAT, box, (F <= 1) & fat_planes(cv.tex(box), 1.1, 0.08), only=(T.MUSCLE,))
            bx = side * 95 * p.ws
            cv.tube(
                [(bx + side * 20, 10, -865 * s), (bx, 8, -1100 * s), (bx - side * 10, 5, -1300 * s)],
                14,
                [(0, T.CORTICAL_DENSE), (5, T.MARROW)],
            )
            cv.tube(
                [(side * 70 * p.ws, -40, -840 * s), (side * 72 * p.ws, -30, -1300 * s)],
                4.5,
                [(0, T.BLOOD)],
                only=(T.MUSCLE, T.FAT),
            )
        # body cavity: visceral fat (later filled by lungs and organs)
        box, F = cv.ztube(self.z_apex, self.z_floor, self.cavity, p=2)
        if box is not None:
            cv.fill(T.FAT, box, F <= 1, only=(T.MUSCLE, T.FAT, T.FAT_SC))
        # paraspinal muscles (erector spinae), outside the cavity behind the spine
        for side in (-1, 1):

            def para(z, side=side):
                x, y = self.spine_xy(z)
                r = 18 + 6 * (z < -450 * s)
                return [x + side * (20 + 14 * p.ws), y + 44, r * p.ws, 20.0 + 0 * z, 22.0 + 0 * z]

            box, F = cv.ztube(-150 * s, -790 * s, para)
            if box is not None:
                cv.fill(T.MUSCLE, box, F <= 1, only=(T.FAT_SC, T.FAT, T.MUSCLE))
        if p.breasts > 0:
            for side in (-1, 1):
                z0 = -420 * s
                _, cy, a, ba, _ = self.outline(np.array([z0]))
                r = 30 + 32 * p.breasts
                c = (side * 0.45 * a[0], cy[0] - ba[0] + 0.25 * r, z0 - 0.3 * r)
                rot = rotation(yaw=side * 25)
                rr = (r * 1.35, r * 0.55, r * 0.9)
                cv.ellipsoid(T.SKIN, c, [v + 1.5 for v in rr], rot, only=(T.AIR,))
                cv.ellipsoid(T.FAT_SC, c, rr, rot, only=(T.AIR, T.SKIN))
                cv.ellipsoid(
                    T.GLAND,
                    (c[0], c[1] - 0.15 * r, c[2]),
                    (r * 0.7, r * 0.3, r * 0.5),
                    rot,
                    only=(T.FAT_SC,),
                    where=lambda b: cv.tex(b) > -0.4,
                )
        if p.arms_down and self.arms_in_body:
            self.paint_arms(cv)

    def paint_arms(self, cv: Canvas, into: Canvas | None = None) -> None:
        """Arms hanging along the trunk (upper arm, elbow, forearm), with humerus, radius and ulna."""
        cv = into or cv
        p, s = self.p, self.p.hs
        gap = float(self._stream("arms").uniform(8, 35))
        for side in (-1, 1):

            def at(z):
                _, cy, a, _, _ = self.outline(np.array([z]))
                return cy[0], a[0]

            pts, rad = [], []
            for z, r in ((-318, 34), (-400, 45), (-500, 40), (-590, 36), (-700, 36), (-820, 28), (-900, 22)):
                zz = z * s
                cy, a = at(min(zz, -340 * s))
                r = r * (0.9 + 0.1 * p.ws) + 0.35 * p.fat
                pts.append((side * (a + gap + r), cy + 10, zz))
                rad.append(r)
            cy, a = at(-318 * s)
            pts[0] = (side * (a - rad[0] - 5), cy + 5, pts[0][2])
            cv.tube(pts, rad, [(0, T.FAT_SC), (0.35 * p.fat + 1.5, T.MUSCLE)], only=(T.AIR,))
            cv.tube(pts, [v + 0.5 for v in rad], [(0, T.SKIN)], only=(T.AIR,))
            # humerus in the upper arm, radius and ulna in the forearm
            hum = [pts[0], pts[1], (pts[2][0], pts[2][1] + 5, pts[2][2]), (pts[3][0], pts[3][1] + 8, pts[3][2])]
            cv.tube(hum, 11, [(0, T.CORTICAL_DENSE), (3.5, T.MARROW)], only=(T.MUSCLE, T.FAT_SC, T.FAT))
            for dy, r in ((-9, 7), (9, 7.5)):
                fore = [
                    (pts[3][0], pts[3][1] + dy, pts[3][2]),
                    (pts[4][0], pts[4][1] + dy, pts[4][2]),
                    (pts[5][0], pts[5][1] + dy * 0.8, pts[5][2]),
                ]
                cv.tube(fore, r, [(0, T.CORTICAL), (2.2, T.MARROW)], only=(T.MUSCLE, T.FAT_SC, T.FAT))

    # ------------------------------------------------------------------------------------- head
    def zb(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Skull base: floor of the cranial cavity (anterior, middle, posterior fossa) as z(x, y).

        The steps between the fossae (sphenoid wings, petrous ridges) run obliquely: further forward laterally,
        so an axial slice shows them as a V opening backwards, not as a wall across the head.
        """
        hc, s = self.p.hc, self.p.hs
        rel = (Y + 0.45 * np.abs(X)) / hc
        z = np.interp(rel, [-100, -38, -28, 0, 18, 30, 120], [-100, -102, -122, -128, -140, -152, -150])
        # the fossae are bowls, so an axial slice cuts their floors as arcs, not as a solid plate:
        # the posterior fossa rises to the sides and the back, the temporal fossae are deepest laterally
        post = np.clip((rel - 18) / 15, 0, 1)
        mid = np.clip((rel + 28) / 10, 0, 1) * (1 - post)
        xr = X / (62 * hc)
        yb = np.clip((Y / hc - 50) / 40, 0, None)
        z = z + post * (30 * xr * xr + 25 * yb * yb) - mid * 10 * xr * xr
        return z * s

    def paint_head(self, cv: Canvas) -> None:
        """Scalp and face, skull, brain, facial bones, sinuses, jaw: in this order (later parts overwrite)."""
        if cv.z[-1] < -240 * self.p.hs:
            return
        cran_c, cran_r = self._paint_scalp_and_face(cv)
        inner = self._paint_skull(cv, cran_c, cran_r)
        layout = brain_layout(self._stream("brain"), self.csf_rim_mm) if self.vary_head else BrainLayout()
        self._paint_brain(cv, cran_c, inner, layout)
        self._paint_facial_bones(cv)
        self._paint_sinuses(cv)
        self._paint_mandible_and_teeth(cv)

    def _paint_scalp_and_face(self, cv: Canvas) -> tuple[tuple, tuple]:
        """Cranium and face outline, skin, parotids, masseters; returns the cranium's centre and radii."""
        p = self.p
        hc, s = p.hc, p.hs
        above = lambda zmin: (lambda b: b.Z > zmin)
        # outline: cranium + scalp, face, nose, ears (the neck tube is part of the trunk outline)
        cran_c, cran_r = (0, 8 * hc, -97 * s), (75 * hc, 95 * hc, 97 * s)
        cv.ellipsoid(T.FAT_SC, cran_c, cran_r, where=above(-150 * s))
        face_c, face_r = (0, -40 * hc, -168 * s), (56 * hc, 55 * hc, 50 * s)
        cv.ellipsoid(T.FAT_SC, face_c, face_r, p=2.5, only=(T.AIR,))
        cv.ellipsoid(T.MUSCLE, face_c, [v - 7 for v in face_r], p=2.5, only=(T.FAT_SC,))
        cv.ellipsoid(T.SOFT, (0, -96 * hc, -128 * s), (12 * hc, 14 * hc, 25 * s), rotation(pitch=-12), only=(T.AIR,))
        for side in (-1, 1):
            cv.ellipsoid(
                T.SOFT, (side * 76 * hc, 8 * hc, -118 * s), (5, 13 * hc, 27 * s), rotation(yaw=side * 10), only=(T.AIR,)
            )
        # skin over the whole head
        for c, r, pw in ((cran_c, cran_r, 2.0), (face_c, face_r, 2.5)):
            box, F = cv.superquadric(c, r, None, pw)
            if box is not None:
                cv.fill(T.SKIN, box, (F <= 1) & (F > (1 - 1.8 / min(r)) ** pw), only=(T.FAT_SC,))
        # parotid glands, masseters
        for side in (-1, 1):
            cv.ellipsoid(
                T.PAROTID, (side * 46 * hc, -2 * hc, -152 * s), (11 * hc, 17 * hc, 22 * s), only=(T.MUSCLE, T.FAT_SC)
            )
            cv.ellipsoid(
                T.MUSCLE, (side * 47 * hc, -30 * hc, -165 * s), (8 * hc, 16 * hc, 25 * s), only=(T.FAT_SC, T.MUSCLE)
            )
        return cran_c, cran_r

    def _paint_skull(self, cv: Canvas, cran_c: tuple, cran_r: tuple) -> list[float]:
        """Calvarium (tables and diploe, or a compact shell when skulls vary) and skull base; returns the inner radii."""
        p, rng = self.p, self.rng
        hc, s = p.hc, p.hs
        # skull: outer table, diploe, inner table; skull base plate below the cranial cavity
        scalp = FIXED_SCALP_MM
        thick = float(rng.uniform(5.5, 8.0))  # drawn even when skulls vary: later parts of the head share this stream
        outer_table, inner_table = 1.8, 1.7
        if self.vary_head:
            thick, outer_table, inner_table = skull_layers(self._stream("skull"))
            # its own stream: with the default fixed range every other draw, and so every earlier case, is unchanged
            scalp = float(self._stream("scalp").uniform(*self.scalp_mm))
        sk = [v - scalp for v in cran_r]
        base_ok = lambda b: b.Z > self.zb(b.X, b.Y) - 7 * s
        cv.ellipsoid(T.CORTICAL_DENSE, cran_c, sk, where=base_ok)
        if thick - outer_table - inner_table > 0.0:
            cv.ellipsoid(T.MARROW, cran_c, [v - outer_table for v in sk], where=base_ok, only=(T.CORTICAL_DENSE,))
            cv.ellipsoid(
                T.CORTICAL_DENSE, cran_c, [v - thick + inner_table for v in sk], where=base_ok, only=(T.MARROW,)
            )
        inner = [v - thick for v in sk]
        box, F = cv.superquadric(cran_c, inner)
        if box is not None:
            zb = self.zb(box.X, box.Y)
            fm = (box.X**2 + (box.Y - 22 * hc) ** 2) < (15 * hc) ** 2  # foramen magnum
            plate = (F <= 1) & (box.Z <= zb) & (box.Z > zb - 7 * s) & ~fm
            cv.fill(T.CORTICAL_DENSE, box, plate)
            cv.fill(T.MARROW, box, plate & (box.Z < zb - 2.0) & (box.Z > zb - 5.0 * s) & (cv.tex(box) > -0.5))
            cv.fill(T.CSF, box, (F <= 1) & (box.Z > zb))
        return inner

    def _paint_brain(self, cv: Canvas, cran_c: tuple, inner: list[float], layout: BrainLayout) -> None:
        """Grey matter ribbon, white matter, sulci, ventricles, cerebellum, brainstem inside the skull."""
        p = self.p
        hc, s = p.hc, p.hs
        # brain: grey matter ribbon, white matter with gyral texture, sulci, fissure, ventricles
        gm = [v - layout.csf_rim for v in inner]
        box, F = cv.superquadric(cran_c, gm)
        if box is not None:
            zb = self.zb(box.X, box.Y)
            brain = (F <= 1) & (box.Z > zb + 2)
            cv.fill(T.GM, box, brain, only=(T.CSF,))
            tex = cv.tex(box)
            if cv.texture is not None:
                # gyri: the grey/white boundary and the sulci follow level sets of a folded texture (sin of the
                # smooth field), so the cortex looks convoluted rather than blotchy
                fold = np.sin(np.float32(2.6) * tex)
                cv.fill(T.WM, box, (F + 0.12 * fold <= 0.8) & (box.Z > zb + 8), only=(T.GM,))
                sulci = brain & (np.abs(fold) < layout.sulcus_width) & (F > 0.66) & (tex > -1.2)
                cv.fill(T.CSF, box, sulci, only=(T.GM, T.WM))
            else:
                cv.fill(T.WM, box, (F <= 0.78) & (box.Z > zb + 8), only=(T.GM,))
            cv.fill(
                T.CSF,
                box,
                brain & (np.abs(box.X) < 0.8) & (box.Z > -88 * s) & (tex > -0.6 if cv.texture is not None else True),
                only=(T.GM, T.WM),
            )
        wide, long, high = layout.ventricle_scale
        for side in (-1, 1):
            cv.ellipsoid(
                T.CSF,
                (side * (10 + 3 * (wide - 1)) * hc, 0, -82 * s),
                (6.5 * wide * hc, 30 * long * hc, 7 * high * s),
                rotation(yaw=side * 8),
                only=(T.WM, T.GM),
            )
        third = layout.third_ventricle_scale
        cv.ellipsoid(T.CSF, (0, 5 * hc, -100 * s), (2 * third * hc, 14 * hc, 9 * s), only=(T.WM, T.GM))
        for side in (-1, 1):  # cerebellum (folia from the texture)
            c = (side * 22 * hc, 52 * hc, -138 * s)
            cv.ellipsoid(T.GM, c, (40 * hc, 32 * hc, 21 * s), only=(T.CSF, T.GM, T.WM))
            cv.ellipsoid(T.WM, c, (18 * hc, 14 * hc, 10 * s), only=(T.GM,))
        cv.tube(
            [(0, 5 * hc, -95 * s), (0, 12 * hc, -125 * s), (0, 22 * hc, -158 * s)],
            [11, 14, 10],
            [(0, T.CORD)],
            only=(T.CSF, T.GM, T.WM, T.CORTICAL_DENSE, T.MARROW),
        )

    def _paint_facial_bones(self, cv: Canvas) -> None:
        """Orbits, maxilla and palate, zygomatic arches, petrous bones, mastoids, ear canals."""
        p = self.p
        hc, s = p.hc, p.hs
        # orbits: bony cone, fat, globe, lens, optic nerve
        for side in (-1, 1):
            oc = (side * 30 * hc, -52 * hc, -108 * s)
            cv.ellipsoid(T.CORTICAL, oc, (19 * hc, 30 * hc, 18 * s), where=lambda b: b.Y > -64 * hc)
            cv.ellipsoid(T.FAT, oc, (17.5 * hc, 28.5 * hc, 16.5 * s), where=lambda b: b.Y > -78 * hc)
            g = (side * 31 * hc, -66 * hc, -108 * s)
            cv.ellipsoid(T.SOFT, g, (12.8 * hc,) * 3)
            cv.ellipsoid(T.VITREOUS, g, (12 * hc,) * 3)
            cv.ellipsoid(T.LENS, (g[0], g[1] - 9 * hc, g[2]), (4.5, 2.0, 4.5))
            cv.tube(
                [(g[0], g[1] + 11 * hc, g[2]), (side * 12 * hc, -22 * hc, -114 * s)],
                2.3,
                [(0, T.CORD)],
                only=(T.FAT, T.CORTICAL),
            )
        # maxilla and hard palate (bone block, carved by the sinuses and the nasal cavity below)
        cv.bone((0, -52 * hc, -145 * s), (40 * hc, 35 * hc, 22 * s), 2.0, only=(T.MUSCLE, T.FAT_SC, T.SOFT, T.FAT))
        cv.bone((0, -48 * hc, -157 * s), (26 * hc, 32 * hc, 4 * s), 1.2)
        for side in (-1, 1):  # zygomatic arches, petrous bones, mastoids, ear canals
            cv.tube(
                [
                    (side * 40 * hc, -60 * hc, -118 * s),
                    (side * 58 * hc, -25 * hc, -125 * s),
                    (side * 62 * hc, 0, -128 * s),
                ],
                4,
                [(0, T.CORTICAL), (2, T.MARROW)],
                only=SOFT_LIKE + (T.PAROTID,),
            )
            cv.tube(
                [(side * 50 * hc, 12 * hc, -128 * s), (side * 18 * hc, -8 * hc, -126 * s)],
                [6, 4],
                [(0, T.CORTICAL_DENSE)],
            )
            mc = (side * 54 * hc, 18 * hc, -130 * s)
            box, F = cv.superquadric(mc, (10 * hc, 12 * hc, 13 * s))
            if box is not None:
                cv.fill(T.CORTICAL_DENSE, box, F <= 1)
                cv.fill(T.GAS, box, (F <= 0.8) & (cv.tex(box) < 0.3))
            cv.tube(
                [(side * 74 * hc, 6 * hc, -124 * s), (side * 58 * hc, 6 * hc, -126 * s)],
                [3.2, 2.5],
                [(0, T.GAS)],
                only=SOFT_LIKE + (T.CORTICAL_DENSE, T.CORTICAL, T.MARROW),
            )

    def _paint_sinuses(self, cv: Canvas) -> None:
        """Paranasal sinuses (air, sometimes fluid), nasal cavity and ethmoid cells."""
        p, rng = self.p, self.rng
        hc, s = p.hc, p.hs
        # sinuses and nasal cavity (bony walls, then air)
        sinuses = [((side * 27 * hc, -50 * hc, -137 * s), (13 * hc, 16 * hc, 16 * s)) for side in (-1, 1)]
        sinuses.append(((0, -18 * hc, -140 * s), (11 * hc, 10 * hc, 9 * s)))
        if rng.random() < 0.8:
            sinuses.append(((0, -73 * hc, -84 * s), (12 * hc, 5 * hc, 10 * s)))
        for c, r in sinuses:
            cv.ellipsoid(T.CORTICAL, c, [v + 1.8 for v in r])
        for c, r in sinuses:
            fluid = rng.random() < 0.1  # sinusitis: fluid instead of air
            cv.ellipsoid(T.SOFT if fluid else T.GAS, c, r)
        nc, nr = (0, -62 * hc, -130 * s), (12 * hc, 32 * hc, 20 * s)
        cv.ellipsoid(T.CORTICAL, nc, [v + 2 for v in nr], p=3, where=lambda b: b.Y > -80 * hc)
        box, F = cv.superquadric(nc, nr, p=3)
        if box is not None:
            cv.fill(T.GAS, box, F <= 1)
            cv.fill(T.CARTILAGE, box, (F <= 1) & (np.abs(box.X) < 1.2))
        box, F = cv.superquadric((0, -48 * hc, -112 * s), (11 * hc, 18 * hc, 11 * s))
        if box is not None:  # ethmoid air cells: honeycomb of bone and air
            cv.fill(T.CORTICAL, box, F <= 1)
            cv.fill(T.GAS, box, (F <= 1) & (cv.tex(box) < 0.5))
        for side in (-1, 1):
            cv.ellipsoid(T.SOFT, (side * 8 * hc, -58 * hc, -138 * s), (4, 24 * hc, 5), only=(T.GAS,))
            cv.ellipsoid(T.SOFT, (side * 9 * hc, -55 * hc, -124 * s), (3, 18 * hc, 4), only=(T.GAS,))

    def _arch(self, theta: float, upper: bool) -> tuple[float, float]:
        hc = self.p.hc
        w, yf, d = (27.0, -84.0, 52.0) if upper else (25.0, -81.0, 50.0)
        return math.copysign(w * hc * math.sin(abs(theta)), theta), (yf + d * (1 - math.cos(theta))) * hc

    def _paint_mandible_and_teeth(self, cv: Canvas) -> None:
        p = self.p
        hc, s = p.hc, p.hs
        pts = []
        for side in (-1, 1):
            half = [
                (side * 50 * hc, 8 * hc, -125 * s, 5.0),
                (side * 48 * hc, 2 * hc, -150 * s, 6.0),
                (side * 46 * hc, -5 * hc, -186 * s, 7.5),
            ]
            for th in np.linspace(1.35, 0.2, 5):
                x, y = self._arch(side * th, upper=False)
                half.append((x * 1.02, y, -188 * s, 8.0))
            if side < 0:
                pts += half
            else:
                pts += [(0, -87 * hc, -193 * s, 9.5)] + half[::-1]
        cv.tube(
            [q[:3] for q in pts], [q[3] for q in pts], [(0, T.CORTICAL), (2.5, T.MARROW)], only=SOFT_LIKE + (T.PAROTID,)
        )
        cv.ellipsoid(T.MUSCLE, (0, -42 * hc, -172 * s), (24 * hc, 32 * hc, 13 * s), only=(T.MUSCLE, T.FAT_SC, T.SOFT))
        if p.mouth_air:
            cv.ellipsoid(T.GAS, (0, -50 * hc, -168 * s), (16 * hc, 24 * hc, 2.5), only=(T.MUSCLE, T.SOFT, T.FAT_SC))
        self.teeth = []
        k = 0
        for upper, zc in ((True, -163 * s), (False, -177 * s)):
            for side in (-1, 1):
                for i in range(8):
                    k += 1
                    if k - 1 in p.missing_teeth:
                        continue
                    th = side * (i + 0.5) / 8 * 1.3
                    x, y = self._arch(th, upper)
                    rr = (3.3 + 0.5 * (i > 4)) * hc
                    root = zc + (10 if upper else -10) * s
                    cv.tube([(x, y, zc), (x, y, root)], [rr * 0.7, 1.8], [(0, T.TEETH)])
                    cv.ellipsoid(T.TEETH, (x, y, zc), (rr, rr * (1.0 + 0.3 * (i > 4)), 4.5 * s))
                    self.teeth.append((x, y, zc))

    # ------------------------------------------------------------------------------------- neck
    def paint_neck(self, cv: Canvas) -> None:
        p = self.p
        hc, s = p.hc, p.hs
        if cv.z[-1] < -380 * s or cv.z[0] > -120 * s:
            return
        for side in (-1, 1):
            cv.tube(
                [(side * 56 * hc, 20 * hc, -130 * s), (side * 45, -10, -210 * s), (side * 18, -36, -292 * s)],
                [10, 11, 8],
                [(0, T.FAT), (2, T.MUSCLE)],
                only=(T.MUSCLE, T.FAT),
            )
            cv.tube(
                [
                    (side * 20, -8, -150 * s),
                    (side * 21, -4, -200 * s),
                    (side * 22, -6, -260 * s),
                    (side * 14, -8, -320 * s),
                ],
                3.6,
                [(0, T.BLOOD)],
                only=(T.MUSCLE, T.FAT, T.SOFT, T.PAROTID),
            )
            jr = float(self.rng.uniform(4, 7))
            cv.tube(
                [(side * 30, 2, -140 * s), (side * 28, -2, -230 * s), (side * 24, -8, -300 * s)],
                jr,
                [(0, T.BLOOD)],
                only=(T.MUSCLE, T.FAT, T.SOFT, T.PAROTID),
            )
            cv.ellipsoid(T.GLAND, (side * 17 * hc, -14 * hc, -262 * s), (8, 9, 18 * s), only=(T.MUSCLE, T.FAT))
            cv.ellipsoid(T.SOFT, (side * 28 * hc, -38 * hc, -200 * s), (10, 12, 9), only=(T.MUSCLE, T.FAT_SC))
        cv.ellipsoid(T.GLAND, (0, -24 * hc, -265 * s), (12, 4, 5), only=(T.MUSCLE, T.FAT))
        # larynx: thyroid cartilage shield (calcifies with age), hyoid
        lar = lambda z, a, b: [0 * z, -10 + 0 * z, a + 0 * z, b + 0 * z, 0.75 * b + 0 * z]
        box, F = cv.ztube(-218 * s, -240 * s, lambda z: lar(z, 17, 16))
        if box is not None:
            cv.fill(T.CARTILAGE, box, F <= 1)
            if p.age > 0.5 and cv.texture is not None:
                cv.fill(T.CORTICAL, box, (F <= 1) & (cv.tex(box) > 1.0 - p.age))
        box, F = cv.ztube(-218 * s, -240 * s, lambda z: lar(z, 14.5, 13.5))
        cv.fill(T.SOFT, box, F <= 1) if box is not None else None
        cv.tube(
            [
                (-22 * hc, 0, -210 * s),
                (-16 * hc, -22 * hc, -212 * s),
                (0, -30 * hc, -212 * s),
                (16 * hc, -22 * hc, -212 * s),
                (22 * hc, 0, -210 * s),
            ],
            3,
            [(0, T.CORTICAL), (1.5, T.MARROW)],
        )
        # oesophagus, then the airway (pharynx, larynx, trachea with cartilage wall)
        _, ys = self.spine_xy(np.array([-300 * s, -360 * s]))
        cv.tube(
            [(0, 14, -225 * s), (2, 15, -262 * s), (4, ys[0] - 20, -300 * s), (6, ys[1] - 22, -360 * s)],
            6.5,
            [(0, T.SOFT)],
        )
        air = [
            (0, -22 * hc, -138 * s, 8),
            (0, -2 * hc, -160 * s, 6.5),
            (0, 2, -185 * s, 6.5),
            (0, 4, -205 * s, 6),
            (0, -8, -228 * s, 5.5),
            (0, -14, -250 * s, 8),
        ]
        cv.tube([q[:3] for q in air], [q[3] for q in air], [(0, T.GAS)])
        trachea = [(0, -14, -250 * s), (0, -12, -290 * s), (0, -4, -330 * s), (0, 6, -362 * s)]
        cv.tube(trachea, 10.3, [(0, T.CARTILAGE), (1.8, T.GAS)])
        if cv.texture is not None:
            box = cv.box((-70, -60, -270 * s), (70, 80, -160 * s))
            if box is not None:
                t = cv.tex(box)
                cv.fill(T.FAT, box, fat_planes(t, 0.9, 0.09) | (t > 2.1), only=(T.MUSCLE,))

    # ------------------------------------------------------------------------------------- thorax
    def paint_thorax(self, cv: Canvas) -> None:
        p, rng = self.p, self.rng
        s = p.hs
        if cv.z[-1] < self.z_dome_l - 120 or cv.z[0] > self.z_apex:
            return
        box, F = cv.ztube(self.z_apex, self.z_floor, self.cavity)
        if box is not None:
            lung = (F <= 1) & (box.Z > self.dome(box.X, box.Y))
            cv.fill(T.LUNG, box, lung, only=(T.FAT,))
            cv.fill(
                T.MUSCLE,
                box,
                (F <= 1) & (box.Z <= self.dome(box.X, box.Y)) & (box.Z > self.dome(box.X, box.Y) - 4),
                only=(T.FAT,),
            )  # diaphragm

        # mediastinum: a fatty band between sternum and spine
        def med(z):
            cx, cy, ac, bac, bpc = self.cavity(z)
            w = np.interp(z, np.array([-500, -380, -330, -262]) * s, [35, 32, 28, 16])
            _, ys = self.spine_xy(z)
            front = cy - bac
            return [cx + 4, (front + ys) / 2, w, (ys - front) / 2, (ys - front) / 2]

        box, F = cv.ztube(self.z_apex - 5, self.z_dome_r, med, p=4)
        if box is not None:
            cv.fill(T.FAT, box, F <= 1, only=(T.LUNG,))
        zd = (self.z_dome_r + self.z_dome_l) / 2
        # heart with pericardial fat, myocardium and chambers
        hc_ = np.array([22 * p.ws, -22 * p.ap, zd + 55])
        rot = rotation(yaw=-40 + rng.uniform(-8, 8), pitch=20)
        hr = np.array([56, 44, 58]) * rng.uniform(0.9, 1.1)
        cv.ellipsoid(T.FAT, hc_, hr + 5, rot, only=(T.LUNG, T.FAT))
        cv.ellipsoid(T.MYOCARD, hc_, hr, rot, only=(T.LUNG, T.FAT))
        for off, r in (((12, -8, -8), (22, 20, 28)), ((-18, -18, 0), (22, 14, 30)), ((-5, 20, 22), (24, 16, 18))):
            cv.ellipsoid(T.BLOOD, hc_ + rot @ np.array(off), r, rot, only=(T.MYOCARD,))
        # great vessels
        _, ys = self.spine_xy(np.array([zd + 40, zd - 100, zd - 250]))
        aorta_r = float(rng.uniform(12, 16))
        ao = [
            (8, -20, zd + 65),
            (8, -15, -335 * s),
            (18, 8, -322 * s),
            (22, 30, -335 * s),
            (20, ys[0] - 18, zd + 40),
            (14, ys[1] - 20, zd - 100),
            (6, ys[2] - 24, zd - 250),
            (4, ys[2] - 26, -705 * s),
        ]
        cv.tube(
            ao,
            [aorta_r, aorta_r, aorta_r, aorta_r * 0.9, aorta_r * 0.85, aorta_r * 0.75, 10, 9],
            [(0, T.BLOOD)],
            only=(T.LUNG, T.FAT, T.SOFT, T.MUSCLE),
        )
        if p.age > 0.4:  # calcified plaques on the aortic wall
            for _ in range(int(12 * (p.age - 0.4))):
                i = int(rng.integers(3, len(ao) - 1))
                t = rng.uniform(0, 1)
                c = np.array(ao[i]) * (1 - t) + np.array(ao[i + 1]) * t
                d = rng.normal(0, 1, 3)
                d[2] = 0
                c = c + d / np.linalg.norm(d) * (aorta_r * 0.8 - 1)
                cv.ellipsoid(T.CORTICAL, c, (1.5, 1.5, 3.0), only=(T.BLOOD,))
        for side in (-1, 1):
            iliac = [(4, ys[2] - 26, -705 * s), (side * 40, ys[2] - 20, -760 * s), (side * 70, -20, -820 * s)]
            cv.tube(iliac, [8, 7, 6], [(0, T.BLOOD)], only=(T.FAT, T.SOFT, T.MUSCLE, T.BOWEL))
        pa = [(12, -40, zd + 80), (12, -25, zd + 100)]
        cv.tube(pa, 13, [(0, T.BLOOD)], only=(T.LUNG, T.FAT))
        for side in (-1, 1):
            cv.tube([(12, -25, zd + 100), (side * 52, 0, -380 * s)], [11, 9], [(0, T.BLOOD)], only=(T.LUNG, T.FAT))
        cv.tube([(-24, -15, -310 * s), (-22, -10, zd + 70)], 10, [(0, T.BLOOD)], only=(T.LUNG, T.FAT))
        cv.tube([(-18, ys[1] - 10, zd - 10), (-15, 5, zd + 40)], 12, [(0, T.BLOOD)], only=(T.LUNG, T.FAT, T.LIVER))
        # oesophagus down to the stomach
        cv.tube(
            [(6, ys[0] - 12, -360 * s), (10, ys[0] - 14, zd), (30, ys[1] - 40, zd - 25)],
            7,
            [(0, T.SOFT)],
            only=(T.LUNG, T.FAT),
        )
        # main bronchi and the vessel/bronchus trees of each lung
        carina = np.array([0, 6, -362 * s])
        for side in (-1, 1):
            hilum = np.array([side * 50 * p.ws, 10, carina[2] - (22 if side < 0 else 30) * s])
            cv.tube([carina, hilum], [7, 5.5], [(0, T.CARTILAGE), (1.5, T.GAS)], only=(T.LUNG, T.FAT, T.SOFT))
            self._lung_tree(cv, hilum, side)
        # small peripheral vessels: isolated dots of blood in the parenchyma (dots/short lines once blurred)
        box = cv.box((-200, -200, self.z_dome_l - 90), (200, 200, self.z_apex))
        if box is not None:
            region = cv.labels[box.sl]
            lung = region == T.LUNG
            rnd = np.frombuffer(self.rng.bytes(region.size), dtype=np.uint8).reshape(region.shape)
            dots = lung & (rnd < 3)  # ~1.2 % of lung voxels
            region[dots] = T.BLOOD

        # sternum (manubrium to xiphoid)
        def stern(z):
            cx, cy, ac, bac, bpc = self.cavity(z)
            a = np.interp(z, np.array([-470, -330, -300]) * s, [12, 15, 24])
            return [cx, cy - bac - 7, a, 6 + 0 * z, 6 + 0 * z]

        box, F = cv.ztube(-298 * s, self.z_dome_r - 25, stern, p=3)
        if box is not None:
            cv.fill(T.CORTICAL, box, F <= 1)
            cv.fill(T.MARROW, box, F <= 0.5, only=(T.CORTICAL,))

    def _lung_tree(self, cv: Canvas, hilum: np.ndarray, side: int) -> None:
        """Pulmonary vessels (and, for the first generations, bronchi beside them), branching into the lung."""
        rng, p = self.rng, self.p
        s = p.hs
        targets = [
            np.array([side * 90 * p.ws, 20, -300 * s]),
            np.array([side * 110 * p.ws, -30, -400 * s]),
            np.array([side * 100 * p.ws, 40, -430 * s]),
            np.array([side * 80 * p.ws, 10, self.z_dome_l + 20]),
            np.array([side * 70 * p.ws, -50, -360 * s]),
            np.array([side * 110 * p.ws, 50, self.z_dome_l - 10]),
        ]
        stack = []
        for t in targets:
            d = t - hilum
            stack.append((hilum, d / np.linalg.norm(d), 5.5, 0))
        while stack:
            start, direction, r, gen = stack.pop()
            length = float(rng.uniform(22, 40)) * (0.82**gen)
            end = start + direction * length
            cv.tube([start, end], [r, r * 0.85], [(0, T.BLOOD)], only=(T.LUNG,))
            if gen < 2 and r > 2.5:
                off = np.cross(direction, [0, 0, 1.0])
                off = off / (np.linalg.norm(off) + 1e-6) * (r + 2.5)
                cv.tube([start + off, end + off], [r * 0.9, r * 0.75], [(0, T.SOFT), (1.2, T.GAS)], only=(T.LUNG,))
            if gen < 6 and r * 0.74 > 0.6:
                for _ in range(2):
                    nd = direction + rng.normal(0, 0.5, 3)
                    nd /= np.linalg.norm(nd)
                    stack.append((end, nd, r * 0.74, gen + 1))

    # ------------------------------------------------------------------------------------- abdomen
    def paint_abdomen(self, cv: Canvas) -> None:
        p, rng = self.p, self.rng
        s, ws, ap = p.hs, p.ws, p.ap
        if cv.z[-1] < -820 * s or cv.z[0] > self.z_dome_r + 10:
            return
        zr, zl = self.z_dome_r, self.z_dome_l
        below = lambda b: b.Z < self.dome(b.X, b.Y) - 4
        _, ysk = self.spine_xy(np.array([-610 * s]))
        ysk = float(ysk[0])
        # liver with vessels, gallbladder
        lc = np.array([-58 * ws, 5, zr - 82])
        lr = np.array([80 * ws, 76 * ap, 88]) * rng.uniform(0.88, 1.1)
        cv.ellipsoid(T.LIVER, lc, lr, rotation(yaw=10), p=2.3, only=(T.FAT,), where=below)
        cv.ellipsoid(
            T.LIVER, (22 * ws, -45 * ap, zr - 45), (55 * ws, 32 * ap, 34), rotation(yaw=-15), only=(T.FAT,), where=below
        )
        for end in ((-95 * ws, -20, zr - 60), (-60 * ws, 30, zr - 40), (-30 * ws, -40, zr - 50)):
            cv.tube([(-18, 8, zr - 15), end], [6, 2.5], [(0, T.BLOOD)], only=(T.LIVER,))
        cv.tube(
            [(-20, 0, zr - 110), (-55 * ws, -10, zr - 80), (-80 * ws, -5, zr - 75)],
            [8, 5, 3],
            [(0, T.BLOOD)],
            only=(T.LIVER,),
        )
        if rng.random() < 0.75:
            cv.ellipsoid(
                T.URINE, (-48 * ws, -55 * ap, zr - 130), (14, 14, 33), rotation(pitch=30), only=(T.FAT, T.LIVER)
            )
        # spleen, stomach (wall, content, gas cap in front: the patient lies supine)
        cv.ellipsoid(
            T.SPLEEN,
            (88 * ws, 48 * ap, zl - 55),
            np.array([25, 55, 55]) * rng.uniform(0.8, 1.2),
            rotation(yaw=30),
            only=(T.FAT,),
            where=below,
        )
        sc, sr, srot = (
            np.array([52 * ws, -28 * ap, zl - 60]),
            np.array([45, 38, 58]) * rng.uniform(0.8, 1.15),
            rotation(yaw=-20, pitch=20),
        )
        cv.ellipsoid(T.SOFT, sc, sr, srot, only=(T.FAT,), where=below)
        cv.ellipsoid(T.BOWEL, sc, sr - 4, srot, only=(T.SOFT,))
        gas_front = sc[1] - sr[1] * (1 - 1.2 * p.gas * rng.uniform(0.2, 1.0))
        cv.ellipsoid(T.GAS, sc, sr - 4, srot, only=(T.BOWEL,), where=lambda b: b.Y < gas_front)
        # kidneys: perirenal fat, cortex, medulla, sinus fat, pelvis
        for side in (-1, 1):
            kc = np.array([side * 72 * ws, ysk + 18, -610 * s - (12 if side < 0 else 0) - p.breath * 0.5])
            krot = rotation(yaw=side * 30, roll=-side * 12)
            kr = np.array([28, 22, 55]) * rng.uniform(0.88, 1.1)
            cv.ellipsoid(T.FAT, kc, kr + 9, krot, only=(T.FAT, T.MUSCLE))
            cv.ellipsoid(T.KIDNEY, kc, kr, krot, only=(T.FAT,))
            cv.ellipsoid(T.MEDULLA, kc, kr - 7, krot, only=(T.KIDNEY,), where=lambda b: cv.tex(b) > -0.3)
            cv.ellipsoid(T.FAT, kc + krot @ np.array([-side * 8, -4, 0]), (9, 7, 25), krot, only=(T.KIDNEY, T.MEDULLA))
            cv.ellipsoid(T.URINE, kc + krot @ np.array([-side * 12, -6, 0]), (5, 4, 10), krot, only=(T.FAT,))
            # psoas
            cv.tube(
                [
                    (side * 25, ysk - 5, -570 * s),
                    (side * 42, ysk - 10, -660 * s),
                    (side * 55, ysk - 20, -740 * s),
                    (side * 72, -15, -820 * s),
                    (side * 80, -25, -870 * s),
                ],
                [8, 18, 24, 20, 14],
                [(0, T.MUSCLE)],
                only=(T.FAT, T.MUSCLE),
            )
        # pancreas, duodenum
        cv.tube(
            [
                (-35, ysk - 38, -590 * s),
                (0, ysk - 42, -580 * s),
                (40, ysk - 32, -572 * s),
                (75 * ws, ysk - 10, -565 * s),
            ],
            [12, 11, 10, 8],
            [(0, T.PANCREAS)],
            only=(T.FAT,),
        )
        box = cv.box((-60, ysk - 80, -610 * s), (100 * ws, ysk + 10, -550 * s))
        if box is not None and cv.texture is not None:
            cv.fill(T.FAT, box, cv.tex(box) > 1.0, only=(T.PANCREAS,))
        cv.tube(
            [(-40, -30, -555 * s), (-58, ysk - 35, -585 * s), (-45, ysk - 40, -625 * s), (0, ysk - 45, -630 * s)],
            11,
            [(0, T.SOFT), (2.5, T.BOWEL)],
            only=(T.FAT,),
        )
        # colon frame with stool and gas, then small-bowel loops in the remaining space
        self._paint_colon(cv)
        self._paint_small_bowel(cv)

    def _paint_colon(self, cv: Canvas) -> None:
        p, rng = self.p, self.rng
        s, ws, ap = p.hs, p.ws, p.ap
        j = lambda: rng.uniform(-8, 8)
        path = [
            (-82 * ws, -5, -770 * s),
            (-92 * ws, 10 + j(), -690 * s),
            (-88 * ws, 5, -610 * s),
            (-70 * ws, -25 * ap, -585 * s),
            (-30, -65 * ap + j(), -630 * s + j()),
            (30, -68 * ap + j(), -625 * s + j()),
            (80 * ws, -10, -570 * s),
            (95 * ws, 20, -640 * s),
            (92 * ws, 15 + j(), -730 * s),
            (55, -15, -790 * s),
            (15, 35, -800 * s),
            (0, 65 * ap, -830 * s),
            (0, 72 * ap, -870 * s),
        ]
        radii = [26, 23, 22, 21, 20, 20, 20, 19, 18, 17, 16, 18, 15]
        cv.tube(path, [r + 2 for r in radii], [(0, T.SOFT), (2, T.STOOL)], only=(T.FAT,))
        box = cv.box((-130 * ws, -120, -900 * s), (130 * ws, 120, -540 * s))
        if box is not None and cv.texture is not None:
            cv.fill(T.GAS, box, cv.tex(box) < -1.8 + 1.2 * p.gas, only=(T.STOOL,))
            cv.fill(T.BOWEL, box, cv.tex(box) > 1.6, only=(T.STOOL,))

    def _paint_small_bowel(self, cv: Canvas) -> None:
        p, rng = self.p, self.rng
        s, ws, ap = p.hs, p.ws, p.ap
        top = -590 * s
        bottom = -790 * s + 35 * p.bladder
        for _ in range(34):
            pt = np.array([rng.uniform(-70, 70) * ws, rng.uniform(-70, 20) * ap, rng.uniform(bottom, top)])
            pts = [pt.copy()]
            for _ in range(3):
                pt = pt + rng.normal(0, 14, 3)
                pts.append(pt.copy())
            r = float(rng.uniform(9, 14))
            cv.tube(pts, r, [(0, T.SOFT), (2, T.BOWEL)], only=(T.FAT,))
            if rng.random() < 0.3 * p.gas + 0.05:
                c = pts[int(rng.integers(len(pts)))]
                cv.ellipsoid(T.GAS, c + np.array([0, -r * 0.4, 0]), (r * 0.8, r * 0.5, r * 0.8), only=(T.BOWEL,))

    # ------------------------------------------------------------------------------------- pelvis
    def paint_pelvis(self, cv: Canvas) -> None:
        p, rng = self.p, self.rng
        s, ws, ap = p.hs, p.ws, p.ap
        if cv.z[-1] < -1000 * s or cv.z[0] > -660 * s:
            return
        # bladder (wall + urine), prostate or uterus
        f = p.bladder
        bc = np.array([0, -48 * ap, -825 * s + 25 * f])
        br = np.array([28 + 32 * f, 24 + 26 * f, 22 + 32 * f])
        cv.ellipsoid(T.SOFT, bc, br + 3, only=(T.FAT, T.BOWEL, T.SOFT))
        cv.ellipsoid(T.URINE, bc, br, only=(T.SOFT,))
        if p.male:
            cv.ellipsoid(
                T.PROSTATE,
                (0, -28 * ap, -868 * s),
                np.array([20, 16, 17]) * rng.uniform(0.85, 1.3),
                only=(T.FAT, T.SOFT, T.MUSCLE),
            )
            for side in (-1, 1):
                cv.ellipsoid(T.GLAND, (side * 16, -5, -845 * s), (12, 5, 6), rotation(yaw=side * 30), only=(T.FAT,))
        elif p.uterus:
            uc = (0, -5, -795 * s)
            cv.ellipsoid(T.UTERUS, uc, (30, 22, 40), rotation(pitch=-35), only=(T.FAT, T.BOWEL, T.SOFT))
            cv.ellipsoid(T.URINE, uc, (4, 3, 28), rotation(pitch=-35), only=(T.UTERUS,))
        for side in (-1, 1):
            sx = side
            # gluteal and obturator muscles (before the bones)
            cv.ellipsoid(
                T.MUSCLE, (sx * 88 * ws, 80 * ap, -805 * s), (58 * ws, 42 * ap, 75), only=(T.FAT_SC, T.FAT, T.MUSCLE)
            )
            cv.ellipsoid(T.MUSCLE, (sx * 60 * ws, 5, -835 * s), (10, 35, 30), only=(T.FAT,))
            cv.ellipsoid(
                T.MUSCLE,
                (sx * 105 * ws, 30, -735 * s),
                (16, 45, 35),
                rotation(yaw=sx * 40),
                only=(T.FAT_SC, T.FAT, T.MUSCLE),
            )
            # iliac wing: a section of an ellipsoidal shell (the bowl of the false pelvis), crest on top
            wc = np.array([sx * 12 * ws, 12 * ap, -705 * s])
            wr = np.array([118 * ws, 72 * ap, 112 * s])
            wing = (
                lambda b, sx=sx: (sx * b.X > 28 * ws)
                & (b.Z < -688 * s)
                & (b.Z > -800 * s)
                & (b.Y > -58 * ap)
                & (b.Y < 78 * ap)
            )
            self._shell_bone(cv, wc, wr, 9.0, wing)
            hip = np.array([sx * 88 * ws, -5 * ap, -815 * s])
            cv.bone(hip + np.array([sx * 4, 6, 18]), (30, 33, 38), 2.0)
            cv.ellipsoid(T.CARTILAGE, hip, (27, 27, 27))
            cv.bone(hip, (24.5, 24.5, 24.5), 1.5)
            neck_end = hip + np.array([sx * 32, 10, -35])
            cv.tube([hip, neck_end], [15, 16], [(0, T.CORTICAL), (2.5, T.MARROW)])
            cv.bone(neck_end + np.array([sx * 8, 2, 0]), (16, 20, 22), 1.6)
            cv.tube(
                [neck_end + np.array([0, 0, -10]), (sx * 100 * ws, 8, -1100 * s)],
                14,
                [(0, T.CORTICAL_DENSE), (5, T.MARROW)],
            )
            # ischium and pubic rami
            cv.bone((sx * 62 * ws, 35 * ap, -862 * s), (14, 22, 32), 1.8, rotation(pitch=15))
            cv.tube(
                [hip + np.array([-sx * 10, -18, -2]), (sx * 40, -50 * ap, -830 * s), (sx * 6, -58 * ap, -838 * s)],
                [10, 9, 9],
                [(0, T.CORTICAL), (2, T.MARROW)],
            )
            cv.tube(
                [(sx * 6, -55 * ap, -855 * s), (sx * 40, -30 * ap, -870 * s), (sx * 60 * ws, 25 * ap, -878 * s)],
                [8, 7, 8],
                [(0, T.CORTICAL), (2, T.MARROW)],
            )
        box = cv.box((-2.5, -70, -870 * s), (2.5, -40, -820 * s))
        cv.fill(T.CARTILAGE, box, np.ones((1, 1, 1), bool), only=(T.CORTICAL, T.MARROW)) if box is not None else None

    def _shell_bone(self, cv: Canvas, c: np.ndarray, r: np.ndarray, thick: float, where) -> None:
        """A curved bony plate: the part of an ellipsoidal shell `thick` mm deep selected by `where`."""
        cortex = max(1.5, 0.6 * cv.min_step)
        box, f_out = cv.superquadric(c, r)
        if box is None:
            return
        sel = where(box)
        _, f_in = cv.superquadric(c, r - thick, box=box)
        cv.fill(T.CORTICAL, box, sel & (f_out <= 1) & (f_in > 1))
        if thick - 2 * cortex > 0.5 * cv.min_step:
            _, f_a = cv.superquadric(c, r - cortex, box=box)
            _, f_b = cv.superquadric(c, r - thick + cortex, box=box)
            cv.fill(T.MARROW, box, sel & (f_a <= 1) & (f_b > 1))

    # ------------------------------------------------------------------------------------- spine
    def levels(self) -> list[tuple[str, float, float]]:
        """(name, z_top, z_bottom) of each vertebral body, cervical to lumbar."""
        s = self.p.hs
        out = [("C2", -160 * s, -182 * s)]
        top = -186 * s
        for i in range(3, 8):
            out.append((f"C{i}", top, top - 12 * s))
            top -= 16 * s
        top = -264 * s
        pitch = (562 - 264) / 12 * s
        for i in range(1, 13):
            out.append((f"T{i}", top, top - pitch + 5 * s))
            top -= pitch
        top = -562 * s
        for i in range(1, 6):
            out.append((f"L{i}", top, top - 27 * s))
            top -= 36 * s
        return out

    def paint_spine(self, cv: Canvas) -> None:
        p = self.p
        s = p.hs
        if cv.z[0] > -140 * s:
            return
        levels = self.levels()
        for k, (name, zt, zbt) in enumerate(levels):
            zm = (zt + zbt) / 2
            if zt < cv.z[0] - 60 or zbt > cv.z[-1] + 60:
                continue
            x0, y0 = (float(v) for v in self.spine_xy(zm))
            kind = name[0]
            t = k / len(levels)
            if kind == "C":
                a, b, ca, cb, sp, sd, tp, tb = 9, 8, 12, 8, 22 + 14 * (name == "C7"), 5, 20, 0
            elif kind == "T":
                a, b, ca, cb, sp, sd, tp, tb = 13 + 8 * t, 11 + 6 * t, 8, 8, 36, 26, 28, 12
            else:
                a, b, ca, cb, sp, sd, tp, tb = 23, 17, 11, 9, 32, 3, 38, 3
            a, b = a * (0.9 + 0.1 * p.ws), b * (0.9 + 0.1 * p.ws)
            box, F = cv.ztube(zt, zbt, lambda z: [x0, y0, a, b, b])
            if box is not None:
                cv.fill(T.CORTICAL, box, F <= 1)
                cv.fill(T.MARROW, box, F <= (1 - 1.3 / b) ** 2)
            # disc below
            if k + 1 < len(levels):
                zn = levels[k + 1][1]
                box, F = cv.ztube(zbt, zn, lambda z: [x0, y0, a * 0.97, b * 0.97, b * 0.97])
                cv.fill(T.DISC, box, F <= 1, keep=(T.CORTICAL, T.MARROW)) if box is not None else None
            # posterior arch: ring around the canal, spinous and transverse processes
            yc = y0 + b + cb + 2
            box, F = cv.ztube(zt - 2, zbt + 2, lambda z: [x0, yc, ca + 5, cb + 5, cb + 6])
            if box is not None:
                cv.fill(T.CORTICAL, box, F <= 1)
                cv.fill(T.MARROW, box, (F <= 0.75) & (F > 0.55))
            ang = math.degrees(math.atan2(sd * s, sp))
            half = math.hypot(sp, sd * s) / 2
            h = {"C": 4.5, "T": 5.0, "L": 10.0}[kind]
            cv.bone(
                (x0, yc + cb + 3 + sp / 2, zm - sd * s / 2),
                (3.2, half, h),
                1.2,
                rotation(pitch=-ang),
                only=BODY_FILL + (T.LUNG, T.DISC),
            )
            for side in (-1, 1):
                cv.tube(
                    [(x0 + side * (ca + 2), yc, zm), (x0 + side * (ca + tp), yc + tb, zm)],
                    [5, 4],
                    [(0, T.CORTICAL), (1.5, T.MARROW)],
                    only=BODY_FILL + (T.LUNG, T.DISC),
                )
        # C1 ring and the dens of C2
        x0, y0 = (float(v) for v in self.spine_xy(-152 * s))
        box, F = cv.ztube(-147 * s, -158 * s, lambda z: [x0, y0 + 12, 22, 20, 18])
        if box is not None:
            cv.fill(T.CORTICAL, box, (F <= 1) & (F > 0.45), only=BODY_FILL + (T.GAS, T.PAROTID, T.SOFT))
        cv.tube([(x0, y0 + 2, -165 * s), (x0, y0 + 2, -146 * s)], 5.5, [(0, T.CORTICAL), (1.5, T.MARROW)])
        # sacrum and coccyx following the sacral curve
        # sacrum: one curved wedge from S1 (wide alae) to S5, then the coccyx
        _, yl5 = self.spine_xy(-740 * s)
        yl5 = float(yl5)
        sk = np.array([-744, -765, -790, -815, -835]) * s
        sac = profile(
            sk,
            [0, 0, 0, 0, 0],
            yl5 + np.array([10, 20, 33, 45, 52]),
            np.array([50, 46, 34, 22, 13]) * p.ws,
            [17, 15, 12, 9, 7],
            [17, 15, 12, 9, 7],
        )
        box, F = cv.ztube(sk[0], sk[-1], sac, p=2.5)
        if box is not None:
            cv.fill(T.CORTICAL, box, F <= 1)
            cv.fill(T.MARROW, box, F <= 0.62)
            cv.fill(T.CSF, box, (np.abs(box.X) < 6) & (F <= 0.1))  # sacral canal
        cv.tube([(0, yl5 + 55, -840 * s), (0, yl5 + 52, -870 * s)], 5, [(0, T.CORTICAL), (2, T.MARROW)])

        # spinal canal (continuous) with the cord down to L1
        def canal(z):
            x, y = self.spine_xy(z)
            isc = z > -262 * s
            isl = z < -562 * s
            ca = np.where(isc, 12, np.where(isl, 11, 8))
            cb = np.where(isc, 8, np.where(isl, 9, 8))
            b = np.where(isc, 8, np.where(isl, 17, 11 + 6 * np.clip((-z - 264 * s) / (300 * s), 0, 1)))
            return [x, y + b * (0.9 + 0.1 * p.ws) + cb + 2, ca, cb, cb]

        box, F = cv.ztube(-150 * s, -760 * s, canal)
        if box is not None:
            cv.fill(T.CSF, box, F <= 1)
            cv.fill(T.CORD, box, (F <= 0.35) & (box.Z > -565 * s))

    def paint_ribs(self, cv: Canvas) -> None:
        p = self.p
        s = p.hs
        if cv.z[-1] < -700 * s or cv.z[0] > -250 * s:
            return
        levels = [lv for lv in self.levels() if lv[0].startswith("T")]
        for k, (name, zt, zbt) in enumerate(levels):
            n = k + 1
            zh = (zt + zbt) / 2
            x0, y0 = (float(v) for v in self.spine_xy(zh))
            end = {
                1: 2.9,
                2: 2.9,
                3: 2.9,
                4: 2.9,
                5: 2.85,
                6: 2.8,
                7: 2.75,
                8: 2.5,
                9: 2.35,
                10: 2.2,
                11: 1.8,
                12: 1.45,
            }[n]
            drop = (25 + 9 * min(n, 7) + (n > 7) * 5 * (n - 7)) * s
            for side in (-1, 1):
                pts = [(x0 + side * 16, y0 + 14, zh), (x0 + side * 32, y0 + 26, zh - 2)]
                phis = np.linspace(0.55, end, 9)
                for ph in phis:
                    z = zh - drop * ((ph - 0.4) / (end - 0.4)) ** 1.3
                    cx, cy, ac, bac, bpc = (float(v[0]) for v in self.cavity(np.array([z])))
                    b = bpc if math.cos(ph) > 0 else bac
                    pts.append((cx + side * (ac + 5) * math.sin(ph), cy + (b + 5) * math.cos(ph), z))
                r = 5.0 if n > 1 else 4.5
                ncart = 3 if n <= 10 else 0
                bone_pts = pts if ncart == 0 else pts[: len(pts) - ncart + 1]
                cv.tube(bone_pts, r, [(0, T.CORTICAL), (1.3, T.MARROW)], only=BODY_FILL + (T.LUNG, T.SKIN))
                if ncart:
                    cv.tube(pts[len(pts) - ncart :], r * 0.9, [(0, T.CARTILAGE)], only=BODY_FILL + (T.LIVER,))

    def paint_shoulders(self, cv: Canvas) -> None:
        """Clavicles, scapulae and (with the arms down) the humeral heads."""
        p = self.p
        s, ws, ap = p.hs, p.ws, p.ap
        if cv.z[-1] < -480 * s or cv.z[0] > -250 * s:
            return
        for side in (-1, 1):
            _, cy, a, ba, bp = (float(v[0]) for v in self.muscle(np.array([-300 * s])))
            lat = a - 30 if p.arms_down else a - 15
            cv.tube(
                [
                    (side * 18, cy - ba + 8, -300 * s),
                    (side * 80 * ws, cy - ba + 12, -290 * s),
                    (side * lat, cy - 5, -282 * s),
                ],
                [7, 6.5, 7],
                [(0, T.CORTICAL), (2, T.MARROW)],
                only=BODY_FILL + (T.SKIN,),
            )
            sc = (side * 95 * ws, 72 * ap, -360 * s)
            cv.bone(sc, (5, 55 * ws, 80 * s), 1.5, rotation(yaw=-side * 35), p=2.5, only=BODY_FILL)
            cv.tube(
                [(side * 60 * ws, 92 * ap, -300 * s), (side * lat, 30, -285 * s)],
                6,
                [(0, T.CORTICAL), (2, T.MARROW)],
                only=BODY_FILL + (T.SKIN,),
            )
            if p.arms_down:
                cv.bone((side * (lat + 8), 10, -305 * s), (23, 23, 23), 1.5, only=BODY_FILL)
