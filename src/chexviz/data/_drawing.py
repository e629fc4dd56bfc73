"""Private drawing helpers of `chexviz.data.synthetic`: chest radiographs drawn with numpy.

An image is drawn as a *density* map and tone-mapped to 8-bit grey at the end. Geometry is given
in normalised anatomical coordinates: ``u`` runs from 0 at the image's left edge to 1 at its
right edge and ``v`` from 0 at the top to 1 at the bottom. On a frontal view the image's left is
the patient's right, as on a real PA film; ``side = -1`` is the lung on the image's left and
``side = +1`` the one on its right. Densities: about 0.03 for air outside the body, 0.16 for
aerated lung, 0.5 for soft tissue, 0.72 for the mediastinum and heart, up to 1 for metal.

Every random choice is taken from the generator passed in, in a fixed order, so the same
generator state gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

Array = npt.NDArray[np.floating[Any]]
Box = tuple[int, int, int, int]
"""A pixel box ``(x0, y0, x1, y1)``: pixel edges, so the box covers columns ``x0 .. x1 - 1``."""
Params = dict[str, float]

_SOFT_TISSUE = 0.50
_AERATED = 0.34  # density that air in the lung takes away from the soft-tissue level
_MEDIASTINUM = 0.22
_ABDOMEN = 0.18
_METAL = 0.55

BOX_MARGIN = 0.025
"""Margin added around each sign's tight box, as a fraction of the image width / height."""


@dataclass(frozen=True)
class Anatomy:
    """One patient's chest geometry in normalised image coordinates (see the module docstring).

    Attributes:
        lung_offset: Distance of each lung's centre from the midline.
        lung_cy: Vertical centre of the lungs.
        lung_rx: Horizontal radius of a lung.
        lung_ry: Vertical radius of a lung (apex to the level of the costophrenic angles).
        dome_right: Height of the peak of the right hemidiaphragm (image left).
        dome_left: Height of the peak of the left hemidiaphragm (image right).
        dome_drop: How far below its peak a dome meets the chest wall.
        heart_cx: Horizontal centre of the heart.
        heart_cy: Vertical centre of the heart.
        heart_rx: Long radius of the heart.
        heart_ry: Short radius of the heart.
        heart_tilt: Angle of the heart's long axis below the horizontal, in radians.
        mediastinum_hw: Half width of the upper mediastinum.
        knob: Bulge of the aortic knob on the image's right.
        rib_top: Height of the first posterior rib at the spine.
        rib_spacing: Vertical distance between posterior ribs.
        carina: Height of the tracheal bifurcation.
        female: Whether to draw breast shadows.
    """

    lung_offset: float
    lung_cy: float
    lung_rx: float
    lung_ry: float
    dome_right: float
    dome_left: float
    dome_drop: float
    heart_cx: float
    heart_cy: float
    heart_rx: float
    heart_ry: float
    heart_tilt: float
    mediastinum_hw: float
    knob: float
    rib_top: float
    rib_spacing: float
    carina: float
    female: bool

    def lung_cx(self, side: int) -> float:
        """Horizontal centre of the lung on ``side`` (-1 image left, +1 image right)."""
        return 0.5 + side * self.lung_offset

    def dome(self, side: int) -> float:
        """Height of the peak of the hemidiaphragm under the lung on ``side``."""
        return self.dome_right if side < 0 else self.dome_left


def sample_anatomy(rng: np.random.Generator, *, female: bool) -> Anatomy:
    """Draws one patient's chest geometry."""
    dome_right = float(rng.uniform(0.68, 0.72))
    return Anatomy(
        lung_offset=float(rng.uniform(0.185, 0.205)),
        lung_cy=float(rng.uniform(0.50, 0.53)),
        lung_rx=float(rng.uniform(0.16, 0.18)),
        lung_ry=float(rng.uniform(0.41, 0.44)),
        dome_right=dome_right,
        dome_left=dome_right + float(rng.uniform(0.01, 0.04)),
        dome_drop=float(rng.uniform(0.07, 0.10)),
        heart_cx=float(rng.uniform(0.535, 0.55)),
        heart_cy=float(rng.uniform(0.66, 0.69)),
        heart_rx=float(rng.uniform(0.15, 0.165)),
        heart_ry=float(rng.uniform(0.13, 0.145)),
        heart_tilt=float(rng.uniform(0.15, 0.35)),
        mediastinum_hw=float(rng.uniform(0.048, 0.058)),
        knob=float(rng.uniform(0.012, 0.025)),
        rib_top=float(rng.uniform(0.08, 0.11)),
        rib_spacing=float(rng.uniform(0.068, 0.076)),
        carina=float(rng.uniform(0.34, 0.38)),
        female=female,
    )


def _ramp(x: Array, width: float) -> Array:
    """A linear soft step from 0 (``x <= -width/2``) to 1 (``x >= width/2``)."""
    out: Array = np.clip(x * (1.0 / width) + 0.5, 0.0, 1.0)
    return out


def _gauss(x: Array) -> Array:
    return np.exp(-0.5 * x * x)


@dataclass(frozen=True)
class _Window:
    """A rectangle of the canvas with its pixel and anatomical coordinates.

    ``x``/``u`` are rows of shape ``(1, w)`` and ``y``/``v`` columns of shape ``(h, 1)``, so
    expressions in both broadcast to the window's ``(h, w)``.
    """

    rows: slice
    cols: slice
    x: Array
    y: Array
    u: Array
    v: Array

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.shape[0], self.x.shape[1])

    def box(self, mask: npt.NDArray[np.bool_]) -> Box | None:
        """The tight pixel box of ``mask`` (shaped like the window), or None when it is empty."""
        mask = np.broadcast_to(mask, self.shape)
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        if cols.size == 0:
            return None
        x0 = int(self.cols.start) + int(cols[0])
        y0 = int(self.rows.start) + int(rows[0])
        x1 = int(self.cols.start) + int(cols[-1]) + 1
        y1 = int(self.rows.start) + int(rows[-1]) + 1
        return (x0, y0, x1, y1)


class Canvas:
    """A density map with a per-image affine jitter from anatomical to pixel coordinates.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        scale: Zoom of the anatomy (1 = as sampled).
        shift_u: Horizontal shift of the anatomy, as a fraction of the width.
        shift_v: Vertical shift of the anatomy, as a fraction of the height.
    """

    def __init__(
        self, width: int, height: int, *, scale: float, shift_u: float, shift_v: float
    ) -> None:
        self.width = width
        self.height = height
        self.scale = scale
        self.shift_u = shift_u
        self.shift_v = shift_v
        self.density = np.zeros((height, width), dtype=np.float32)
        self._all = self._make_window(0, 0, width, height)

    def to_px(self, u: float, v: float) -> tuple[float, float]:
        """Pixel coordinates (continuous, pixel centres at ``i + 0.5``) of an anatomical point."""
        x = ((u - 0.5) * self.scale + 0.5 + self.shift_u) * self.width
        y = ((v - 0.5) * self.scale + 0.5 + self.shift_v) * self.height
        return x, y

    def px_per_u(self) -> float:
        """Pixels per unit of ``u``."""
        return self.scale * self.width

    def px_per_v(self) -> float:
        """Pixels per unit of ``v``."""
        return self.scale * self.height

    def window(self, u0: float, v0: float, u1: float, v1: float) -> _Window:
        """The pixels covering the anatomical rectangle ``[u0, u1] x [v0, v1]`` (clipped)."""
        xa, ya = self.to_px(u0, v0)
        xb, yb = self.to_px(u1, v1)
        x0 = min(max(math.floor(xa), 0), self.width)
        y0 = min(max(math.floor(ya), 0), self.height)
        x1 = min(max(math.ceil(xb), x0), self.width)
        y1 = min(max(math.ceil(yb), y0), self.height)
        return self._make_window(x0, y0, x1, y1)

    def everything(self) -> _Window:
        """The whole canvas."""
        return self._all

    def _make_window(self, x0: int, y0: int, x1: int, y1: int) -> _Window:
        x = (np.arange(x0, x1, dtype=np.float32) + 0.5)[None, :]
        y = (np.arange(y0, y1, dtype=np.float32) + 0.5)[:, None]
        u = (x / self.width - 0.5 - self.shift_u) / self.scale + 0.5
        v = (y / self.height - 0.5 - self.shift_v) / self.scale + 0.5
        return _Window(slice(y0, y1), slice(x0, x1), x, y, u, v)

    def add(self, w: _Window, amount: Array | float) -> None:
        """Adds ``amount`` (shaped like ``w`` or broadcastable to it) to the density in ``w``."""
        self.density[w.rows, w.cols] += amount

    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """A blank 8-bit layer the size of the canvas, to draw thin lines on with PIL."""
        image = Image.new("L", (self.width, self.height), 0)
        return image, ImageDraw.Draw(image)


def _capsule(
    w: _Window,
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    edge: float = 1.5,
) -> Array:
    """Soft alpha of a thick line segment between two pixel points (``radius``, ``edge`` in px)."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = np.clip(((w.x - p0[0]) * dx + (w.y - p0[1]) * dy) * (1.0 / length2), 0.0, 1.0)
    ex = w.x - (p0[0] + t * dx)
    ey = w.y - (p0[1] + t * dy)
    return _ramp(radius - np.sqrt(ex * ex + ey * ey), edge)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> Array:
    """Zero-mean, unit-ish smooth noise with features about ``cell`` pixels across."""
    h, w = shape
    small = rng.standard_normal((int(h / cell) + 3, int(w / cell) + 3), dtype=np.float32)
    big = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32)


def _bezier(
    p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 24
) -> list[tuple[float, float]]:
    """Points along a quadratic Bezier curve."""
    out = []
    for i in range(n + 1):
        t = i / n
        a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
        out.append((a * p0[0] + b * p1[0] + c * p2[0], a * p0[1] + b * p1[1] + c * p2[1]))
    return out


# --------------------------------------------------------------------------------------------
# Signs: what a positive label looks like. Each sampler draws the sign's parameters for one study
# (so every view of the study shows the same finding); the frontal renderer draws them.


def _point_in_lung(
    rng: np.random.Generator,
    a: Anatomy,
    side: int,
    *,
    dv: tuple[float, float],
    e_max: float,
    margin: float = 0.04,
) -> tuple[float, float]:
    """A point well inside the lung on ``side``, clear of the heart and mediastinum."""
    cx = a.lung_cx(side)
    for _ in range(200):
        du_n = float(rng.uniform(-0.85, 0.85))
        dv_n = float(rng.uniform(*dv))
        u = cx + du_n * a.lung_rx
        v = a.lung_cy + dv_n * a.lung_ry
        inside = abs(du_n) ** 2.4 + abs(dv_n) ** 2.2 < e_max
        above_dome = v < a.dome(side) + a.dome_drop * du_n * du_n - margin
        clear = abs(u - 0.5) > a.mediastinum_hw + margin + 0.03
        hx, hy = (u - a.heart_cx) / (a.heart_rx * 1.25), (v - a.heart_cy) / (a.heart_ry * 1.4)
        if inside and above_dome and clear and hx * hx + hy * hy > 1.0:
            return u, v
    return cx - side * 0.2 * a.lung_rx, a.lung_cy


def _side(rng: np.random.Generator) -> int:
    return -1 if rng.random() < 0.5 else 1


def _sample_cardiomegaly(rng: np.random.Generator, a: Anatomy) -> Params:
    return {
        "scale_x": float(rng.uniform(1.45, 1.7)),
        "scale_y": float(rng.uniform(1.15, 1.3)),
        "shift_u": float(rng.uniform(0.01, 0.03)),
        "shift_v": float(rng.uniform(-0.02, 0.0)),
    }


def _sample_mediastinum(rng: np.random.Generator, a: Anatomy) -> Params:
    return {
        "amp": float(rng.uniform(0.06, 0.09)),
        "centre": float(rng.uniform(0.24, 0.32)),
        "spread": float(rng.uniform(0.06, 0.085)),
        "asym": float(rng.uniform(0.7, 1.3)),
    }


def _sample_opacity(rng: np.random.Generator, a: Anatomy) -> Params:
    side = _side(rng)
    u, v = _point_in_lung(rng, a, side, dv=(-0.05, 0.4), e_max=0.5)
    p: Params = {
        "side": side,
        "u": u,
        "v": v,
        "amp": float(rng.uniform(0.26, 0.34)),
        "n": float(rng.integers(4, 8)),
    }
    spread = float(rng.uniform(0.03, 0.05))
    for i in range(int(p["n"])):
        p[f"du{i}"] = float(rng.normal(0.0, spread))
        p[f"dv{i}"] = float(rng.normal(0.0, spread * 1.2))
        p[f"s{i}"] = float(rng.uniform(0.028, 0.042))
    return p


def _sample_lesion(rng: np.random.Generator, a: Anatomy) -> Params:
    side = _side(rng)
    u, v = _point_in_lung(rng, a, side, dv=(-0.65, 0.45), e_max=0.6)
    return {
        "u": u,
        "v": v,
        "r": float(rng.uniform(0.05, 0.07)),
        "amp": float(rng.uniform(0.45, 0.55)),
        "lobes": float(rng.uniform(0.0, 0.15)),
        "phase": float(rng.uniform(0.0, 2 * math.pi)),
    }


def _sample_edema(rng: np.random.Generator, a: Anatomy) -> Params:
    return {
        "offset": float(rng.uniform(0.11, 0.13)),
        "v": float(rng.uniform(0.43, 0.49)),
        "su": float(rng.uniform(0.065, 0.085)),
        "sv": float(rng.uniform(0.09, 0.12)),
        "amp": float(rng.uniform(0.2, 0.26)),
    }


def _sample_consolidation(rng: np.random.Generator, a: Anatomy) -> Params:
    side = _side(rng)
    return {
        "side": side,
        "fissure": a.lung_cy + float(rng.uniform(-0.12, 0.02)),
        "slope": float(rng.uniform(-0.15, 0.15)),
        "lateral": float(rng.uniform(-0.9, -0.2)),
        "amp": float(rng.uniform(0.26, 0.32)),
        "branches": float(rng.integers(2, 4)),
        "seed_angle": float(rng.uniform(-0.4, 0.4)),
    }


def _sample_atelectasis(rng: np.random.Generator, a: Anatomy) -> Params:
    side = _side(rng)
    u, v = _point_in_lung(rng, a, side, dv=(0.12, 0.5), e_max=0.45, margin=0.06)
    return {
        "u": u,
        "v": v,
        "length": float(rng.uniform(0.2, 0.28)),
        "thick": float(rng.uniform(0.032, 0.045)),
        "angle": float(rng.uniform(-0.35, 0.35)),
        "amp": float(rng.uniform(0.28, 0.34)),
        "second": float(rng.random() < 0.3),
    }


def _sample_pneumothorax(rng: np.random.Generator, a: Anatomy) -> Params:
    return {
        "side": _side(rng),
        "depth": float(rng.uniform(0.25, 0.4)),
        "lower": a.lung_cy + a.lung_ry * float(rng.uniform(-0.1, 0.25)),
    }


def _sample_effusion(rng: np.random.Generator, a: Anatomy) -> Params:
    r = rng.random()
    sides = (-1,) if r < 0.4 else (1,) if r < 0.7 else (-1, 1)
    p: Params = {}
    for side in sides:
        key = "r" if side < 0 else "l"
        p[f"{key}_depth"] = float(rng.uniform(0.07, 0.18))
        p[f"{key}_meniscus"] = float(rng.uniform(0.05, 0.11))
        p[f"{key}_amp"] = float(rng.uniform(0.85, 1.05))
    return p


def _sample_devices(rng: np.random.Generator, a: Anatomy) -> Params:
    p: Params = {}
    if rng.random() < 0.6:
        p["ett_tip"] = a.carina - float(rng.uniform(0.03, 0.08))
        p["ett_u"] = float(rng.uniform(-0.006, 0.006))
    if rng.random() < 0.65 or "ett_tip" not in p:
        side = _side(rng)
        p["cvc_side"] = side
        p["cvc_tip"] = float(rng.uniform(0.33, 0.45))
        p["cvc_entry"] = float(rng.uniform(0.24, 0.32))
    if rng.random() < 0.35:
        p["ng_end"] = float(rng.uniform(0.60, 0.70))
    if rng.random() < 0.4:
        n = int(rng.integers(1, 4))
        for i in range(n):
            p[f"ecg{i}_u"] = float(rng.uniform(0.15, 0.85))
            p[f"ecg{i}_v"] = float(rng.uniform(0.05, 0.30))
    return p


_SAMPLERS: dict[str, Callable[[np.random.Generator, Anatomy], Params]] = {
    "Enlarged Cardiomediastinum": _sample_mediastinum,
    "Cardiomegaly": _sample_cardiomegaly,
    "Lung Opacity": _sample_opacity,
    "Lung Lesion": _sample_lesion,
    "Edema": _sample_edema,
    "Consolidation": _sample_consolidation,
    "Atelectasis": _sample_atelectasis,
    "Pneumothorax": _sample_pneumothorax,
    "Pleural Effusion": _sample_effusion,
    "Support Devices": _sample_devices,
}

DRAWN_LABELS: tuple[str, ...] = tuple(_SAMPLERS)
"""The observations this module can draw, in CheXpert column order."""


def sample_signs(
    labels: tuple[str, ...], anatomy: Anatomy, rng: np.random.Generator
) -> dict[str, Params]:
    """Draws the parameters of the signs for ``labels`` (each in `DRAWN_LABELS`)."""
    out: dict[str, Params] = {}
    for label in DRAWN_LABELS:  # fixed order, whatever order ``labels`` is in
        if label in labels:
            out[label] = _SAMPLERS[label](rng, anatomy)
    return out


# --------------------------------------------------------------------------------------------
# Frontal view


class _Frontal:
    """State of one frontal image while it is drawn."""

    def __init__(
        self,
        a: Anatomy,
        signs: Mapping[str, Params],
        width: int,
        height: int,
        *,
        ap: bool,
        rng: np.random.Generator,
    ) -> None:
        if ap:  # an AP film magnifies the heart a little and is usually taken in less inspiration
            a = replace(
                a,
                heart_rx=a.heart_rx * 1.05,
                heart_ry=a.heart_ry * 1.04,
                dome_right=a.dome_right - 0.015,
                dome_left=a.dome_left - 0.015,
            )
        self.a = a
        self.signs = signs
        self.rng = rng
        self.c = Canvas(
            width,
            height,
            scale=float(rng.uniform(0.95, 1.04)),
            shift_u=float(rng.uniform(-0.025, 0.025)),
            shift_v=float(rng.uniform(-0.025, 0.025)),
        )
        # Signs draw their noise from their own stream, so adding a sign to a study changes
        # nothing in the image outside the sign.
        self.sign_rng = np.random.default_rng(int(rng.integers(2**63)))
        self.boxes: dict[str, list[Box]] = {}
        self.masks: dict[str, npt.NDArray[np.bool_]] = {}

    def _add_mask(self, label: str, w: _Window, region: npt.NDArray[np.bool_]) -> None:
        """Adds a sign's pixels (``region``, shaped like ``w``) to its full-image mask."""
        mask = self.masks.setdefault(label, np.zeros(self.c.density.shape, dtype=np.bool_))
        mask[w.rows, w.cols] |= np.broadcast_to(region, w.shape)

    def _add_region(self, label: str, w: _Window, region: npt.NDArray[np.bool_]) -> None:
        """Records a sign's pixels in its mask and their box (with margin) in its boxes."""
        self._add_mask(label, w, region)
        self._add_box(label, w.box(region))

    def _add_box(self, label: str, box: Box | None) -> None:
        """Records a sign's box, with the margin an annotator would leave, clipped to the image."""
        if box is None:
            return
        mx = round(BOX_MARGIN * self.c.width)
        my = round(BOX_MARGIN * self.c.height)
        x0, y0, x1, y1 = box[0] - mx, box[1] - my, box[2] + mx, box[3] + my
        clipped = (max(x0, 0), max(y0, 0), min(x1, self.c.width), min(y1, self.c.height))
        if clipped[0] < clipped[2] and clipped[1] < clipped[3]:
            self.boxes.setdefault(label, []).append(clipped)

    def _dome_row(self, w: _Window) -> Array:
        """Height of the diaphragm along the columns of ``w``, shape ``(1, w)``."""
        a = self.a
        du_r = (w.u - a.lung_cx(-1)) / a.lung_rx
        du_l = (w.u - a.lung_cx(1)) / a.lung_rx
        right = a.dome_right + a.dome_drop * du_r * du_r
        left = a.dome_left + a.dome_drop * du_l * du_l
        return np.where(w.u < 0.5, right, left)

    def _lung_window(self, side: int) -> _Window:
        a = self.a
        cx = a.lung_cx(side)
        return self.c.window(
            cx - a.lung_rx * 1.05,
            a.lung_cy - a.lung_ry * 1.05,
            cx + a.lung_rx * 1.05,
            a.lung_cy + a.lung_ry * 0.95,
        )

    def _lung_e(self, w: _Window, side: int) -> Array:
        """The lung's implicit shape function on ``w``: < 1 inside the (uncut) lung outline."""
        a = self.a
        du = np.abs(w.u - a.lung_cx(side)) * (1.0 / a.lung_rx)
        dv = np.abs(w.v - a.lung_cy) * (1.0 / a.lung_ry)
        e: Array = du**2.4 + dv**2.2
        return e

    def render(self) -> tuple[npt.NDArray[np.uint8], dict[str, list[Box]]]:
        """The image and the boxes of its signs; their pixel masks are left in ``masks``."""
        a, c, rng, signs = self.a, self.c, self.rng, self.signs
        full = c.everything()
        shape = full.shape

        # Body outline: the chest wall, wider at the shoulders where the arms join.
        half = 0.46 + 0.06 * _ramp(0.18 - full.v, 0.15)
        body = _ramp(half - np.abs(full.u - 0.5), 0.03)
        c.density += 0.03 + (_SOFT_TISSUE - 0.03) * body
        if a.female:
            for side in (-1, 1):
                breast = _gauss((full.u - 0.5 - side * 0.27) / 0.12) * _gauss((full.v - 0.8) / 0.08)
                c.density += 0.06 * breast * body

        abdomen = _ramp(full.v - self._dome_row(full), 0.012) * body
        med = self._mediastinum(full)
        heart = self._heart(full, abdomen)
        central = np.maximum(med, heart)
        c.density += _ABDOMEN * abdomen + _MEDIASTINUM * central * (1.0 - abdomen)

        # Lungs: outline cut by the diaphragm, minus whatever the mediastinum and heart cover.
        lung = np.zeros(shape, dtype=np.float32)
        for side in (-1, 1):
            w = self._lung_window(side)
            e = self._lung_e(w, side)
            du = (w.u - a.lung_cx(side)) / a.lung_rx
            dome = a.dome(side) + a.dome_drop * du * du
            lung[w.rows, w.cols] += _ramp(1.0 - e, 0.08) * _ramp(dome - w.v, 0.01)
        lung *= 1.0 - central
        np.clip(lung, 0.0, 1.0, out=lung)

        pneumothorax = self._pneumothorax(lung)
        c.density -= _AERATED * lung
        c.density += self._markings(full, lung) * (1.0 - pneumothorax)
        c.density -= 0.13 * pneumothorax * lung

        self._trachea(central)
        self._ribs(full, body * (1.0 - 0.7 * central) * (1.0 - 0.8 * abdomen))
        self._clavicles()
        self._spine(full)
        self._stomach()
        self._humeri()

        if "Pleural Effusion" in signs:
            self._effusion(signs["Pleural Effusion"], central)
        if "Consolidation" in signs:
            self._consolidation(signs["Consolidation"], lung)
        if "Lung Opacity" in signs:
            self._opacity(signs["Lung Opacity"], lung)
        if "Edema" in signs:
            self._edema(signs["Edema"], lung)
        if "Atelectasis" in signs:
            self._atelectasis(signs["Atelectasis"], lung)
        if "Lung Lesion" in signs:
            self._lesion(signs["Lung Lesion"])
        if "Support Devices" in signs:
            self._devices(signs["Support Devices"])
        return _finish(c.density, rng), self.boxes

    # -- anatomy -------------------------------------------------------------------------------

    def _mediastinum(self, full: _Window) -> Array:
        a = self.a
        v = full.v
        hw = a.mediastinum_hw * (1.0 + 0.7 * v * v)
        right_border = 0.5 - hw
        left_border = 0.5 + hw + a.knob * _gauss((v - 0.3) / 0.035)
        normal = _ramp(full.u - right_border, 0.012) * _ramp(left_border - full.u, 0.012)
        p = self.signs.get("Enlarged Cardiomediastinum")
        if p is None:
            return normal
        bulge = p["amp"] * _gauss((v - p["centre"]) / p["spread"])
        wide = _ramp(full.u - (right_border - bulge * p["asym"]), 0.012) * _ramp(
            left_border + bulge * (2.0 - p["asym"]) - full.u, 0.012
        )
        # The box spans the widened segment across both borders.
        grown = (wide > 0.5) & (normal < 0.5)
        rows = np.flatnonzero(np.broadcast_to(grown, full.shape).any(axis=1))
        if rows.size:
            band = np.zeros(full.shape, dtype=bool)
            band[rows[0] : rows[-1] + 1] = wide[rows[0] : rows[-1] + 1] > 0.5
            self._add_region("Enlarged Cardiomediastinum", full, band)
        return wide

    def _heart(self, full: _Window, abdomen: Array) -> Array:
        a = self.a
        cx, cy, rx, ry = a.heart_cx, a.heart_cy, a.heart_rx, a.heart_ry
        p = self.signs.get("Cardiomegaly")
        if p is not None:
            cx, cy = cx + p["shift_u"], cy + p["shift_v"]
            rx, ry = rx * p["scale_x"], ry * p["scale_y"]
        w = self.c.window(cx - rx * 1.1, cy - rx * 1.1, cx + rx * 1.1, cy + rx * 1.1)
        cos, sin = math.cos(a.heart_tilt), math.sin(a.heart_tilt)
        du, dv = w.u - cx, w.v - cy
        xr = (du * cos + dv * sin) / rx
        yr = (dv * cos - du * sin) / ry
        alpha = _ramp(1.0 - xr * xr - yr * yr, 0.1)
        out = np.zeros(full.shape, dtype=np.float32)
        out[w.rows, w.cols] = alpha
        if p is not None:
            visible = alpha * (1.0 - abdomen[w.rows, w.cols])
            self._add_region("Cardiomegaly", w, visible > 0.5)
        return out

    def _markings(self, full: _Window, lung: Array) -> Array:
        """Vessel markings: a ridged noise network, densest near the hila."""
        a, rng = self.a, self.rng
        fine = _smooth_noise(rng, full.shape, 7.0)
        coarse = _smooth_noise(rng, full.shape, 24.0)
        ridges = np.clip(1.0 - np.abs(fine) * 1.6, 0.0, 1.0) ** 3
        hila = np.zeros(full.shape, dtype=np.float32)
        for side in (-1, 1):
            hu = 0.5 + side * (a.mediastinum_hw + 0.07)
            du = (full.u - hu) / 0.16
            dv = (full.v - a.lung_cy + 0.05) / 0.2
            hila += np.exp(-np.sqrt(du * du + dv * dv) * 1.7)
        out: Array = lung * (0.05 * ridges * (0.35 + hila) + 0.012 * coarse + 0.07 * hila * hila)
        return out

    def _trachea(self, central: Array) -> None:
        a, c = self.a, self.c
        w = c.window(0.4, 0.0, 0.6, a.carina + 0.08)
        column = _ramp(0.016 - np.abs(w.u - 0.5), 0.008) * _ramp(a.carina - w.v, 0.01)
        carina = c.to_px(0.5, a.carina - 0.01)
        radius = 0.011 * c.px_per_u()
        bronchi = np.maximum(
            _capsule(w, carina, c.to_px(0.43, a.carina + 0.06), radius),
            _capsule(w, carina, c.to_px(0.575, a.carina + 0.065), radius),
        )
        c.add(w, -0.13 * np.maximum(column, bronchi * central[w.rows, w.cols]))

    def _ribs(self, full: _Window, body: Array) -> None:
        a = self.a
        thorax = a.lung_offset + a.lung_rx
        t = np.abs(full.u - 0.5) * (1.0 / thorax)
        extent = _ramp(1.03 - t, 0.06) * _ramp(t - 0.08, 0.06)
        s = (full.v - a.rib_top - (-0.08 * t + 0.17 * t * t)) * (1.0 / a.rib_spacing)
        k = np.floor(s)
        off = np.abs(s - k - 0.3)
        band = _ramp(0.19 - off, 0.06) + 0.5 * _ramp(0.035 - np.abs(off - 0.17), 0.05)
        posterior = band * ((k >= 0) & (k < 10)) * extent
        s2 = (full.v - a.rib_top - 0.1 - 0.16 * (1.0 - t)) * (1.0 / (a.rib_spacing * 1.15))
        k2 = np.floor(s2)
        band2 = _ramp(0.12 - np.abs(s2 - k2 - 0.5), 0.08)
        anterior = band2 * ((k2 >= 0) & (k2 < 6)) * extent * _ramp(t - 0.4, 0.2)
        self.c.density += (0.065 * posterior + 0.03 * anterior) * body

    def _clavicles(self) -> None:
        a, c = self.a, self.c
        top = a.rib_top
        w = c.window(0.1, top - 0.08, 0.9, top + 0.1)
        radius = 0.017 * c.px_per_v()
        alpha = np.zeros(w.shape, dtype=np.float32)
        for side in (-1, 1):
            medial = c.to_px(0.5 + side * 0.045, top + 0.055)
            middle = c.to_px(0.5 + side * 0.17, top + 0.015)
            lateral = c.to_px(0.5 + side * 0.31, top - 0.02)
            alpha = np.maximum(alpha, _capsule(w, medial, middle, radius))
            alpha = np.maximum(alpha, _capsule(w, middle, lateral, radius * 0.9))
        c.add(w, 0.14 * alpha)

    def _spine(self, full: _Window) -> None:
        a = self.a
        column = _ramp(0.028 - np.abs(full.u - 0.5), 0.01)
        bodies = np.cos((full.v - a.rib_top) * (math.pi / a.rib_spacing)) ** 2
        self.c.density += column * (0.025 + 0.012 * bodies)

    def _stomach(self) -> None:
        a, c = self.a, self.c
        cu, cv = 0.5 + a.lung_offset * 0.7, a.dome_left + 0.07
        w = c.window(cu - 0.07, cv - 0.05, cu + 0.07, cv + 0.05)
        e = ((w.u - cu) / 0.055) ** 2 + ((w.v - cv) / 0.035) ** 2
        c.add(w, -0.15 * _ramp(1.0 - e, 0.3) * _ramp(w.v - a.dome_left - 0.03, 0.01))

    def _humeri(self) -> None:
        c = self.c
        for cu in (0.03, 0.97):
            w = c.window(cu - 0.09, -0.02, cu + 0.09, 0.2)
            e = ((w.u - cu) / 0.07) ** 2 + ((w.v - 0.09) / 0.09) ** 2
            c.add(w, 0.12 * _ramp(1.0 - e, 0.15))

    # -- signs ---------------------------------------------------------------------------------

    def _pneumothorax(self, lung: Array) -> Array:
        """Marks the collapsed rim and draws the visceral pleural line; returns the rim alpha."""
        out = np.zeros(lung.shape, dtype=np.float32)
        p = self.signs.get("Pneumothorax")
        if p is None:
            return out
        a, c = self.a, self.c
        side = int(p["side"])
        w = self._lung_window(side)
        radius = self._lung_e(w, side) ** (1.0 / 2.3)
        edge = 1.0 - p["depth"]
        lateral = side * (w.u - a.lung_cx(side)) / a.lung_rx
        limit = _ramp(p["lower"] - w.v, 0.02) * _ramp(lateral + 0.3, 0.1)
        local = lung[w.rows, w.cols]
        rim = _ramp(radius - edge, 0.02) * limit * local
        line = _ramp(0.012 - np.abs(radius - edge), 0.01) * limit * local
        out[w.rows, w.cols] = rim
        c.add(w, 0.16 * line)
        self._add_region("Pneumothorax", w, (rim > 0.5) | (line > 0.5))
        return out

    def _effusion(self, p: Params, central: Array) -> None:
        a, c = self.a, self.c
        for side, key in ((-1, "r"), (1, "l")):
            if f"{key}_depth" not in p:
                continue
            w = self._lung_window(side)
            cx = a.lung_cx(side)
            du = (w.u - cx) / a.lung_rx
            lateral = np.maximum(side * du, 0.0)
            top = a.dome(side) - p[f"{key}_depth"] - p[f"{key}_meniscus"] * lateral * lateral
            inside = _ramp(1.0 - self._lung_e(w, side), 0.08)
            dome = a.dome(side) + a.dome_drop * du * du
            alpha = (
                inside
                * _ramp(w.v - top, 0.015)
                * _ramp(dome - w.v, 0.01)
                * (1.0 - central[w.rows, w.cols])
            )
            c.add(w, (_AERATED + 0.04) * p[f"{key}_amp"] * alpha)
            self._add_region("Pleural Effusion", w, alpha > 0.5)

    def _consolidation(self, p: Params, lung: Array) -> None:
        a, c, rng = self.a, self.c, self.sign_rng
        side = int(p["side"])
        w = self._lung_window(side)
        cx = a.lung_cx(side)
        lateral = side * (w.u - cx) / a.lung_rx
        fissure = p["fissure"] + p["slope"] * lateral * a.lung_rx
        region = _ramp(fissure - w.v, 0.008) * _ramp(lateral - p["lateral"], 0.5)
        alpha = region * lung[w.rows, w.cols]
        texture = 1.0 + 0.08 * _smooth_noise(rng, w.shape, 5.0)
        # Air bronchograms: dark branching tubes running out from the hilum.
        hilum = c.to_px(cx - side * 0.6 * a.lung_rx, p["fissure"] - 0.02)
        bronchi = np.zeros(w.shape, dtype=np.float32)
        for i in range(int(p["branches"])):
            angle = p["seed_angle"] - 0.5 - 0.45 * i
            tip = (
                hilum[0] + side * math.cos(angle) * 0.9 * a.lung_rx * c.px_per_u(),
                hilum[1] + math.sin(angle) * 0.9 * a.lung_rx * c.px_per_u(),
            )
            bronchi = np.maximum(bronchi, _capsule(w, hilum, tip, 1.6))
        c.add(w, alpha * (p["amp"] * texture - 0.12 * bronchi))
        self._add_region("Consolidation", w, alpha > 0.5)

    def _opacity(self, p: Params, lung: Array) -> None:
        c, rng = self.c, self.sign_rng
        w = self._lung_window(int(p["side"]))
        blobs = np.zeros(w.shape, dtype=np.float32)
        for i in range(int(p["n"])):
            bu, bv, s = p["u"] + p[f"du{i}"], p["v"] + p[f"dv{i}"], p[f"s{i}"]
            blobs += _gauss((w.u - bu) / s) * _gauss((w.v - bv) / (s * 1.2))
        patchy = np.clip(blobs * 1.4, 0.0, 1.0) * np.clip(
            0.8 + 0.3 * _smooth_noise(rng, w.shape, 6.0), 0.0, 1.0
        )
        alpha = patchy * lung[w.rows, w.cols]
        c.add(w, p["amp"] * alpha)
        self._add_region("Lung Opacity", w, alpha > 0.2)

    def _edema(self, p: Params, lung: Array) -> None:
        # One box over both lungs: edema is a single, bilateral perihilar finding.
        c, rng = self.c, self.sign_rng
        parts: list[Box] = []
        for side in (-1, 1):
            hu = 0.5 + side * p["offset"]
            w = c.window(
                hu - 3 * p["su"], p["v"] - 3 * p["sv"], hu + 3 * p["su"], p["v"] + 3 * p["sv"]
            )
            haze = _gauss((w.u - hu) / p["su"]) * _gauss((w.v - p["v"]) / p["sv"])
            grain = 0.85 + 0.15 * _smooth_noise(rng, w.shape, 6.0)
            alpha = haze * lung[w.rows, w.cols]
            c.add(w, p["amp"] * alpha * grain)
            self._add_mask("Edema", w, alpha > 0.3)
            part = w.box(alpha > 0.3)
            if part is not None:
                parts.append(part)
        if parts:
            x0s, y0s, x1s, y1s = zip(*parts, strict=True)
            self._add_box("Edema", (min(x0s), min(y0s), max(x1s), max(y1s)))

    def _atelectasis(self, p: Params, lung: Array) -> None:
        c = self.c
        cx, cy = c.to_px(p["u"], p["v"])
        half = 0.5 * p["length"] * c.px_per_u()
        dx, dy = math.cos(p["angle"]) * half, math.sin(p["angle"]) * half
        radius = 0.5 * p["thick"] * c.px_per_v()
        reach = (half + 4 * radius) / c.px_per_u()
        w = c.window(p["u"] - reach, p["v"] - reach, p["u"] + reach, p["v"] + reach * 1.6)
        band = _capsule(w, (cx - dx, cy - dy), (cx + dx, cy + dy), radius, edge=4.0)
        if p["second"]:
            gap = 3.5 * radius
            second = _capsule(w, (cx - dx * 0.7, cy + gap), (cx + dx * 0.8, cy + gap), radius, 4.0)
            band = np.maximum(band, second)
        alpha = band * lung[w.rows, w.cols]
        c.add(w, p["amp"] * alpha)
        self._add_region("Atelectasis", w, alpha > 0.5)

    def _lesion(self, p: Params) -> None:
        c = self.c
        cx, cy = c.to_px(p["u"], p["v"])
        r = p["r"] * c.px_per_u()
        span = r * (1.0 + p["lobes"]) + 2
        w = c.window(
            p["u"] - span / c.px_per_u(),
            p["v"] - span / c.px_per_v(),
            p["u"] + span / c.px_per_u(),
            p["v"] + span / c.px_per_v(),
        )
        dx, dy = w.x - cx, w.y - cy
        theta = np.arctan2(dy, dx)
        edge = r * (1.0 + p["lobes"] * np.cos(3.0 * theta + p["phase"]))
        alpha = _ramp(edge - np.sqrt(dx * dx + dy * dy), 1.5)
        c.add(w, p["amp"] * alpha)
        self._add_region("Lung Lesion", w, alpha > 0.5)

    def _devices(self, p: Params) -> None:
        a, c = self.a, self.c
        unit = c.px_per_u()
        layers: list[Image.Image] = []
        if "ett_tip" in p:
            image, draw = c.layer()
            u = 0.5 + p["ett_u"]
            top, tip = c.to_px(u, -0.1), c.to_px(u, p["ett_tip"])
            draw.line([top, tip], fill=150, width=max(3, round(0.018 * unit)))
            draw.line([top, tip], fill=255, width=max(1, round(0.005 * unit)))
            layers.append(image)
        if "cvc_side" in p:
            side = p["cvc_side"]
            image, draw = c.layer()
            points = _bezier(
                c.to_px(0.5 + side * p["cvc_entry"], 0.1),
                c.to_px(0.5 + side * 0.1, 0.14),
                c.to_px(0.5 + side * 0.035, p["cvc_tip"]),
            )
            draw.line(points, fill=255, width=max(2, round(0.007 * unit)), joint="curve")
            layers.append(image)
        if "ng_end" in p:
            image, draw = c.layer()
            points = [c.to_px(0.505, -0.1), c.to_px(0.51, a.dome_left - 0.04)]
            points += _bezier(
                c.to_px(0.51, a.dome_left - 0.04),
                c.to_px(0.53, a.dome_left + 0.1),
                c.to_px(p["ng_end"], a.dome_left + 0.08),
            )[1:]
            draw.line(points, fill=230, width=max(2, round(0.007 * unit)), joint="curve")
            layers.append(image)
        for i in range(3):
            if f"ecg{i}_u" not in p:
                continue
            image, draw = c.layer()
            x, y = c.to_px(p[f"ecg{i}_u"], p[f"ecg{i}_v"])
            r = 0.022 * unit
            draw.ellipse([x - r, y - r, x + r, y + r], outline=255, width=max(2, round(r / 4)))
            draw.ellipse([x - r / 3, y - r / 3, x + r / 3, y + r / 3], fill=255)
            layers.append(image)
        for image in layers:
            bbox = image.getbbox()
            if bbox is None:
                continue
            c.density += (_METAL / 255.0) * np.asarray(image, dtype=np.float32)
            x0, y0, x1, y1 = bbox
            self._add_box("Support Devices", (x0, y0, x1, y1))
            self._add_mask("Support Devices", c.everything(), np.asarray(image) > 0)


def _finish(density: Array, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Tone-maps a density map to 8-bit grey with exposure jitter, blur and quantum noise."""
    gamma = float(rng.uniform(0.85, 1.15))
    contrast = float(rng.uniform(0.92, 1.08))
    brightness = float(rng.uniform(-0.04, 0.04))
    grey = np.clip(np.clip(density, 0.0, 1.0) ** gamma * contrast + brightness, 0.0, 1.0)
    image = Image.fromarray((grey * 255.0 + 0.5).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.1))))
    noisy = np.asarray(image, dtype=np.float32) + rng.standard_normal(
        density.shape, dtype=np.float32
    ) * float(rng.uniform(2.0, 5.0))
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


@overload
def render_frontal(
    anatomy: Anatomy,
    signs: Mapping[str, Params],
    width: int,
    height: int,
    *,
    ap: bool,
    rng: np.random.Generator,
    masks: Literal[False] = False,
) -> tuple[npt.NDArray[np.uint8], dict[str, list[Box]]]: ...


@overload
def render_frontal(
    anatomy: Anatomy,
    signs: Mapping[str, Params],
    width: int,
    height: int,
    *,
    ap: bool,
    rng: np.random.Generator,
    masks: Literal[True],
) -> tuple[npt.NDArray[np.uint8], dict[str, list[Box]], dict[str, npt.NDArray[np.bool_]]]: ...


def render_frontal(
    anatomy: Anatomy,
    signs: Mapping[str, Params],
    width: int,
    height: int,
    *,
    ap: bool,
    rng: np.random.Generator,
    masks: bool = False,
) -> (
    tuple[npt.NDArray[np.uint8], dict[str, list[Box]]]
    | tuple[npt.NDArray[np.uint8], dict[str, list[Box]], dict[str, npt.NDArray[np.bool_]]]
):
    """Draws a frontal (PA or AP) chest radiograph.

    Args:
        anatomy: The patient's geometry.
        signs: Sign parameters from `sample_signs`, keyed by observation.
        width: Image width in pixels.
        height: Image height in pixels.
        ap: Whether the film is AP (slightly magnified heart, less inspiration).
        rng: Source of the per-image jitter and noise.
        masks: Also return each drawn sign's pixel mask (the pixels its box is drawn around,
            without the box margin); the image is the same either way.

    Returns:
        The ``(height, width)`` uint8 image and, per drawn observation, the pixel boxes of its
        sign (one per separate part: each lung of a bilateral finding, each device); with
        ``masks``, also per drawn observation a boolean mask ``(height, width)``.
    """
    frontal = _Frontal(anatomy, signs, width, height, ap=ap, rng=rng)
    pixels, boxes = frontal.render()
    if masks:
        return pixels, boxes, frontal.masks
    return pixels, boxes


# --------------------------------------------------------------------------------------------
# Lateral view: the patient faces the image's left; no signs are drawn on it.


def render_lateral(
    anatomy: Anatomy, width: int, height: int, *, rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    """Draws a lateral chest radiograph (patient facing left) of the same patient.

    Args:
        anatomy: The patient's geometry (heart size and diaphragm height carry over).
        width: Image width in pixels.
        height: Image height in pixels.
        rng: Source of the per-image jitter and noise.

    Returns:
        The ``(height, width)`` uint8 image.
    """
    a = anatomy
    c = Canvas(
        width,
        height,
        scale=float(rng.uniform(0.95, 1.04)),
        shift_u=float(rng.uniform(-0.03, 0.03)),
        shift_v=float(rng.uniform(-0.025, 0.025)),
    )
    f = c.everything()
    u, v = f.u, f.v
    # Trunk: the anterior chest wall on the left, the back just inside the right edge; the raised
    # arms add soft tissue over the top of the chest.
    trunk = ((u - 0.6) / 0.53) ** 2 + ((v - 0.6) / 0.9) ** 2
    body = _ramp(1.0 - trunk, 0.06)
    arms = _gauss((u - 0.55) / 0.22) * _ramp(0.2 - v, 0.14)
    c.density += 0.03 + (_SOFT_TISSUE - 0.03) * body + 0.1 * arms * body
    dome = np.where(
        u < 0.6,
        a.dome_right + 0.04 + 0.3 * (u - 0.55) ** 2,
        a.dome_right + 0.04 + 1.1 * (u - 0.6) ** 2,
    )
    abdomen = _ramp(v - dome, 0.015) * body
    lung_e = np.abs((u - 0.5) / 0.33) ** 3.0 + np.abs((v - 0.48) / 0.42) ** 2.2
    lung = _ramp(1.0 - lung_e, 0.25) * _ramp(dome - v, 0.015)
    size = (a.heart_rx / 0.157) * 0.17
    heart_e = ((u - 0.25) / size) ** 2 + ((v - a.heart_cy - 0.04) / (size * 1.25)) ** 2
    heart = _ramp(1.0 - heart_e, 0.3)
    # The lungs wrap round the heart, so it only partly replaces them on a lateral film.
    lung = lung * (1.0 - 0.55 * heart) * (1.0 - 0.3 * arms)
    c.density += _ABDOMEN * abdomen + 0.12 * heart * (1.0 - abdomen)
    markings = _smooth_noise(rng, f.shape, 8.0)
    hilum = _gauss((u - 0.52) / 0.07) * _gauss((v - 0.45) / 0.08)
    c.density += lung * (-_AERATED * 0.8 + 0.015 * markings + 0.12 * hilum)
    # Spine: vertebral bodies with darker discs, following a gentle kyphosis.
    spine_u = 0.84 - 0.08 * (v - 0.5) ** 2
    column = _ramp(0.045 - np.abs(u - spine_u), 0.012)
    phase = (v - a.rib_top) * (1.0 / (a.rib_spacing * 0.85))
    discs = _ramp(np.abs(phase - np.floor(phase) - 0.5) - 0.08, 0.06)
    c.density += column * (0.04 + 0.06 * discs) * body
    # Posterior ribs crossing the back of the chest, the sternum in front.
    s = (v - 0.45 * (u - 0.6)) * (1.0 / a.rib_spacing)
    ribs = _ramp(0.15 - np.abs(s - np.floor(s) - 0.5), 0.08) * _ramp(u - 0.62, 0.08)
    c.density += 0.04 * ribs * (0.3 + lung)
    sternum = _ramp(0.012 - np.abs(u - (0.1 + 0.06 * (v - 0.2))), 0.008)
    c.density += 0.1 * sternum * _ramp(v - 0.18, 0.02) * _ramp(0.62 - v, 0.02)
    trachea_u = 0.44 + 0.2 * v
    trachea = _ramp(0.018 - np.abs(u - trachea_u), 0.01) * _ramp(a.carina + 0.02 - v, 0.02)
    c.density -= 0.07 * trachea
    return _finish(c.density, rng)
