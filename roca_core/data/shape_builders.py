"""Procedural furniture: >= 6 clearly different variants for each of the 9 ROCA classes.

Every builder takes a seeded ``numpy.random.Generator`` (small proportion jitter) and returns
``(parts, symmetry)`` in metres: y up, front facing +z, standing on y = 0. The library module
normalises the result to the canonical [-0.5, 0.5]^3 frame.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import trimesh

from roca_core.classes import Symmetry
from roca_core.data.primitives import box, cylinder, ring

Parts = list[trimesh.Trimesh]
Builder = Callable[[np.random.Generator], tuple[Parts, Symmetry]]


def _j(rng: np.random.Generator, value: float, rel: float = 0.08) -> float:
    """Jitter a dimension by up to +-rel (keeps variants of one style recognisably alike)."""
    return float(value * (1.0 + rng.uniform(-rel, rel)))


def _legs(w: float, d: float, h: float, t: float, inset: float = 0.0, round_: bool = False) -> Parts:
    out = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            c = (sx * (w / 2 - t / 2 - inset), h / 2, sz * (d / 2 - t / 2 - inset))
            out.append(cylinder(c, t / 2, h, sections=12) if round_ else box(c, (t, h, t)))
    return out


# ----------------------------------------------------------------------------- chairs
def _chair_seat(rng, w=0.46, d=0.46, h=0.45, t=0.04, leg=0.04) -> tuple[Parts, float, float, float]:
    w, d, h = _j(rng, w), _j(rng, d), _j(rng, h)
    parts = _legs(w, d, h - t, leg) + [box((0, h - t / 2, 0), (w, t, d))]
    return parts, w, d, h


def chair_plain(rng):
    parts, w, d, h = _chair_seat(rng)
    bh = _j(rng, 0.45)
    parts.append(box((0, h + bh / 2, -d / 2 + 0.02), (w, bh, 0.04)))
    return parts, Symmetry.NONE


def chair_arms(rng):
    parts, w, d, h = _chair_seat(rng, w=0.55)
    bh = _j(rng, 0.42)
    parts.append(box((0, h + bh / 2, -d / 2 + 0.025), (w, bh, 0.05)))
    for sx in (-1, 1):
        parts.append(box((sx * (w / 2 - 0.03), h + 0.22, 0.0), (0.06, 0.04, d)))
        parts.append(box((sx * (w / 2 - 0.03), h + 0.11, d / 2 - 0.05), (0.04, 0.22, 0.04)))
    return parts, Symmetry.NONE


def chair_slats(rng):
    parts, w, d, h = _chair_seat(rng)
    bh = _j(rng, 0.5)
    z = -d / 2 + 0.02
    parts.append(box((0, h + bh - 0.03, z), (w, 0.06, 0.04)))  # top rail
    for sx in (-1, 1):
        parts.append(box((sx * (w / 2 - 0.02), h + bh / 2, z), (0.04, bh, 0.04)))
    n = int(rng.integers(3, 6))
    for x in np.linspace(-w / 2 + 0.1, w / 2 - 0.1, n):
        parts.append(box((x, h + bh / 2 - 0.02, z), (0.025, bh - 0.06, 0.02)))
    return parts, Symmetry.NONE


def chair_ladder(rng):
    parts, w, d, h = _chair_seat(rng, w=0.44)
    bh = _j(rng, 0.55)
    z = -d / 2 + 0.02
    for sx in (-1, 1):
        parts.append(box((sx * (w / 2 - 0.02), h + bh / 2, z), (0.04, bh, 0.04)))
    for y in np.linspace(h + 0.15, h + bh - 0.04, 3):
        parts.append(box((0, y, z), (w, 0.05, 0.025)))
    return parts, Symmetry.NONE


def chair_stool(rng):
    h, r = _j(rng, 0.65), _j(rng, 0.19)
    parts = [cylinder((0, h - 0.025, 0), r, 0.05)]
    spread = r * 0.75
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(box((sx * spread, (h - 0.05) / 2, sz * spread), (0.035, h - 0.05, 0.035)))
    parts.append(ring((0, 0.25, 0), spread * 1.45, spread * 1.45 - 0.02, 0.02, sections=32))
    return parts, Symmetry.ROTATE_UP_4


def chair_office(rng):
    h = _j(rng, 0.5)
    w, d = _j(rng, 0.5), _j(rng, 0.48)
    parts = [box((0, h - 0.04, 0), (w, 0.08, d)), cylinder((0, (h - 0.1) / 2 + 0.06, 0), 0.03, h - 0.1)]
    for k in range(5):  # five-star base
        a = 2 * np.pi * k / 5
        parts.append(box((0.16 * np.sin(a), 0.04, 0.16 * np.cos(a)), (0.05, 0.04, 0.34), yaw=a))
    bh = _j(rng, 0.55)
    parts.append(box((0, h + 0.05 + bh / 2, -d / 2 + 0.04), (w * 0.9, bh, 0.07)))
    return parts, Symmetry.NONE


def chair_lounge(rng):
    w, d, h = _j(rng, 0.75), _j(rng, 0.75), _j(rng, 0.42)
    parts = [box((0, h / 2, 0.05), (w - 0.2, h, d - 0.1))]
    for sx in (-1, 1):
        parts.append(box((sx * (w / 2 - 0.05), 0.31, 0), (0.1, 0.62, d)))
    parts.append(box((0, 0.42, -d / 2 + 0.08), (w, 0.84, 0.16)))
    return parts, Symmetry.NONE


# ----------------------------------------------------------------------------- tables
def table_rect(rng):
    w, d, h = _j(rng, 1.4), _j(rng, 0.8), _j(rng, 0.75)
    return _legs(w, d, h - 0.04, 0.06, inset=0.03) + [box((0, h - 0.02, 0), (w, 0.04, d))], Symmetry.ROTATE_UP_2


def table_square(rng):
    s, h = _j(rng, 0.9), _j(rng, 0.74)
    parts = _legs(s, s, h - 0.05, 0.07, inset=0.02)
    parts.append(box((0, h - 0.025, 0), (s, 0.05, s)))
    parts += [box((0, h - 0.09, sz * (s / 2 - 0.05)), (s - 0.1, 0.08, 0.02)) for sz in (-1, 1)]
    parts += [box((sx * (s / 2 - 0.05), h - 0.09, 0), (0.02, 0.08, s - 0.1)) for sx in (-1, 1)]
    return parts, Symmetry.ROTATE_UP_4


def table_round_pedestal(rng):
    r, h = _j(rng, 0.5), _j(rng, 0.74)
    return [cylinder((0, h - 0.02, 0), r, 0.04, sections=48), cylinder((0, h / 2, 0), 0.05, h - 0.04),
            cylinder((0, 0.02, 0), r * 0.55, 0.04, sections=48)], Symmetry.ROTATE_UP_INF


def table_round_legs(rng):
    r, h = _j(rng, 0.55), _j(rng, 0.75)
    a = r * 0.55
    parts = [cylinder((0, h - 0.02, 0), r, 0.04, sections=48)]
    parts += [cylinder((sx * a, (h - 0.04) / 2, sz * a), 0.03, h - 0.04, sections=12)
              for sx in (-1, 1) for sz in (-1, 1)]
    return parts, Symmetry.ROTATE_UP_4


def table_glass_trestle(rng):
    w, d, h = _j(rng, 1.6), _j(rng, 0.9), _j(rng, 0.74)
    parts = [box((0, h - 0.01, 0), (w, 0.02, d))]  # thin "glass" slab
    for sx in (-1, 1):
        x = sx * (w / 2 - 0.15)
        parts.append(box((x, (h - 0.02) / 2, 0), (0.05, h - 0.02, 0.1)))
        parts.append(box((x, 0.025, 0), (0.08, 0.05, d * 0.8)))
        parts.append(box((x, h - 0.04, 0), (0.08, 0.04, d * 0.8)))
    parts.append(box((0, 0.3, 0), (w - 0.3, 0.04, 0.04)))
    return parts, Symmetry.ROTATE_UP_2


def table_coffee(rng):
    w, d, h = _j(rng, 1.1), _j(rng, 0.6), _j(rng, 0.42)
    parts = _legs(w, d, h - 0.04, 0.05) + [box((0, h - 0.02, 0), (w, 0.04, d)),
                                              box((0, 0.12, 0), (w - 0.06, 0.03, d - 0.06))]
    return parts, Symmetry.ROTATE_UP_2


def table_desk(rng):
    w, d, h = _j(rng, 1.3), _j(rng, 0.65), _j(rng, 0.75)
    pw = 0.4
    parts = [box((0, h - 0.02, 0), (w, 0.04, d)),
             box((w / 2 - pw / 2, (h - 0.04) / 2, 0), (pw, h - 0.04, d - 0.02)),  # drawer pedestal
             box((-w / 2 + 0.02, (h - 0.04) / 2, 0), (0.04, h - 0.04, d - 0.02))]
    for y in np.linspace(0.15, h - 0.15, 3):
        parts.append(box((w / 2 - pw / 2, y, d / 2), (pw - 0.06, 0.02, 0.02)))  # drawer handles
    return parts, Symmetry.NONE


# ----------------------------------------------------------------------------- bookcases
def _bookcase(rng, shelves: int, w=0.8, h=1.8, d=0.3, back=True, columns=1, doors=False):
    w, h, d = _j(rng, w), _j(rng, h), _j(rng, d)
    t = 0.025
    parts = [box((sx * (w / 2 - t / 2), h / 2, 0), (t, h, d)) for sx in (-1, 1)]
    parts += [box((0, t / 2, 0), (w, t, d)), box((0, h - t / 2, 0), (w, t, d))]
    if back:
        parts.append(box((0, h / 2, -d / 2 + 0.005), (w, h, 0.01)))
    for y in np.linspace(0, h, shelves + 2)[1:-1]:
        parts.append(box((0, y, 0), (w - 2 * t, t, d - 0.01)))
    for x in np.linspace(-w / 2, w / 2, columns + 1)[1:-1]:
        parts.append(box((x, h / 2, 0), (t, h, d - 0.01)))
    if doors:
        dh = h / (shelves + 1)
        parts += [box((sx * w / 4, dh / 2, d / 2 - 0.01), (w / 2 - 0.01, dh - 0.01, 0.02)) for sx in (-1, 1)]
    # without a back panel or doors, front and back look alike
    return parts, (Symmetry.NONE if back or doors else Symmetry.ROTATE_UP_2)


def bookcase_2(rng):
    return _bookcase(rng, 1, h=0.9, w=0.8)


def bookcase_3(rng):
    return _bookcase(rng, 3, h=1.4)


def bookcase_5(rng):
    return _bookcase(rng, 5, h=2.0, w=0.9)


def bookcase_wide(rng):
    return _bookcase(rng, 2, h=1.1, w=1.6, columns=3)


def bookcase_open(rng):
    return _bookcase(rng, 4, h=1.7, w=0.7, back=False)


def bookcase_doors(rng):
    return _bookcase(rng, 4, h=1.9, w=0.9, doors=True)


# ----------------------------------------------------------------------------- cabinets
def _handle(x, y, z, vertical=True):
    return box((x, y, z + 0.015), (0.015, 0.1, 0.03) if vertical else (0.12, 0.015, 0.03))


def cabinet_single(rng):
    w, h, d = _j(rng, 0.5), _j(rng, 0.85), _j(rng, 0.5)
    return [box((0, h / 2, 0), (w, h, d)), box((0, h / 2 + 0.02, d / 2 + 0.01), (w - 0.04, h - 0.1, 0.02)),
            _handle(w / 2 - 0.06, h * 0.7, d / 2 + 0.02)], Symmetry.NONE


def cabinet_double(rng):
    w, h, d = _j(rng, 1.0), _j(rng, 0.9), _j(rng, 0.45)
    parts = [box((0, h / 2, 0), (w, h, d))]
    for sx in (-1, 1):
        parts.append(box((sx * w / 4, h / 2, d / 2 + 0.01), (w / 2 - 0.02, h - 0.04, 0.02)))
        parts.append(_handle(sx * 0.04, h * 0.6, d / 2 + 0.02))
    return parts, Symmetry.NONE


def cabinet_drawers(rng):
    w, h, d = _j(rng, 0.8), _j(rng, 1.1), _j(rng, 0.5)
    n = int(rng.integers(4, 6))
    parts = [box((0, h / 2, 0), (w, h, d))]
    for y in (np.arange(n) + 0.5) * h / n:
        parts.append(box((0, y, d / 2 + 0.01), (w - 0.04, h / n - 0.02, 0.02)))
        parts.append(_handle(0, y, d / 2 + 0.02, vertical=False))
    return parts, Symmetry.NONE


def cabinet_wardrobe(rng):
    w, h, d = _j(rng, 1.0), _j(rng, 2.0), _j(rng, 0.6)
    parts = [box((0, h / 2 + 0.05, 0), (w, h - 0.1, d)), box((0, 0.025, 0), (w - 0.06, 0.05, d - 0.06)),
             box((0, h - 0.02, 0), (w + 0.04, 0.04, d + 0.04))]
    parts += [_handle(sx * 0.05, h * 0.55, d / 2) for sx in (-1, 1)]
    return parts, Symmetry.NONE


def cabinet_legs(rng):
    w, h, d = _j(rng, 0.9), _j(rng, 0.6), _j(rng, 0.45)
    lh = 0.18
    parts = _legs(w, d, lh, 0.04, inset=0.03) + [box((0, lh + h / 2, 0), (w, h, d))]
    parts += [box((sx * w / 4, lh + h / 2, d / 2 + 0.01), (w / 2 - 0.03, h - 0.05, 0.02)) for sx in (-1, 1)]
    return parts, Symmetry.NONE


def cabinet_sideboard(rng):
    w, h, d = _j(rng, 1.6), _j(rng, 0.75), _j(rng, 0.45)
    t = 0.03
    parts = [box((0, t / 2, 0), (w, t, d)), box((0, h - t / 2, 0), (w, t, d)),
             box((0, h / 2, -d / 2 + t / 2), (w, h, t))]
    parts += [box((sx * (w / 2 - t / 2), h / 2, 0), (t, h, d)) for sx in (-1, 1)]
    parts += [box((sx * w / 6, h / 2, 0), (t, h, d)) for sx in (-1, 1)]
    # closed outer compartments, open middle
    parts += [box((sx * (w / 3 + 0.005), h / 2, d / 2 - 0.01), (w / 3 - 0.02, h - 0.06, 0.02)) for sx in (-1, 1)]
    return parts, Symmetry.NONE


# ----------------------------------------------------------------------------- displays
def display_flat(rng):
    w, h = _j(rng, 0.6), _j(rng, 0.36)
    sh = 0.12
    return [box((0, sh + h / 2, 0), (w, h, 0.03)), box((0, sh / 2 + 0.01, -0.03), (0.05, sh, 0.03)),
            box((0, 0.01, -0.02), (0.22, 0.02, 0.18))], Symmetry.NONE


def display_crt(rng):
    w, h, d = _j(rng, 0.42), _j(rng, 0.38), _j(rng, 0.42)
    return [box((0, h / 2 + 0.03, 0.03), (w, h, 0.08)),                  # bezel
            box((0, h / 2 + 0.03, -d / 2 + 0.07), (w * 0.8, h * 0.85, d - 0.14)),  # tube
            box((0, h / 2 + 0.03, -d / 2 + 0.04), (w * 0.5, h * 0.5, 0.08)),
            box((0, 0.015, 0), (w * 0.6, 0.03, d * 0.6))], Symmetry.NONE


def display_tv(rng):
    w, h = _j(rng, 1.1), _j(rng, 0.63)
    lift = 0.08
    parts = [box((0, lift + h / 2, 0), (w, h, 0.05))]
    for sx in (-1, 1):
        parts.append(box((sx * w * 0.38, lift / 2, 0), (0.04, lift, 0.05)))
        parts.append(box((sx * w * 0.38, 0.01, 0), (0.06, 0.02, 0.24)))
    return parts, Symmetry.ROTATE_UP_2


def display_round_base(rng):
    w, h = _j(rng, 0.55), _j(rng, 0.34)
    return [box((0, 0.2 + h / 2, 0), (w, h, 0.06)), box((0, 0.2 + h / 2, 0.035), (w + 0.04, h + 0.04, 0.01)),
            cylinder((0, 0.11, -0.02), 0.025, 0.2), cylinder((0, 0.01, -0.02), 0.12, 0.02)], Symmetry.NONE


def display_portrait(rng):
    w, h = _j(rng, 0.34), _j(rng, 0.58)
    return [box((0, 0.1 + h / 2, 0), (w, h, 0.03)), box((0, 0.1 + h / 2, -0.035), (0.1, 0.25, 0.04)),
            box((0, 0.06, -0.05), (0.05, 0.12, 0.04)), box((0, 0.01, -0.03), (0.25, 0.02, 0.2))], Symmetry.NONE


def display_ultrawide(rng):
    w, h = _j(rng, 0.9), _j(rng, 0.3)
    parts = []
    n = 7  # curved panel from yawed segments
    for k in range(n):
        a = (k - (n - 1) / 2) * 0.09
        parts.append(box((np.sin(a) * 1.0, 0.16 + h / 2, np.cos(a) * 1.0 - 1.0), (w / n + 0.01, h, 0.025), yaw=a))
    parts += [box((0, 0.09, -0.05), (0.06, 0.16, 0.03)), box((0, 0.01, -0.04), (0.35, 0.02, 0.16))]
    return parts, Symmetry.NONE


# ----------------------------------------------------------------------------- sofas
def _sofa(rng, w=2.0, d=0.9, seats=3, arms=True, high_back=False, legs=False, chaise=False):
    w, d = _j(rng, w), _j(rng, d)
    lift = 0.12 if legs else 0.0
    sh, bh = 0.42, (0.95 if high_back else 0.78)
    arm_w = 0.18 if arms else 0.0
    parts = [box((0, lift + 0.1, 0), (w, 0.2, d))]
    cw = (w - 2 * arm_w) / seats
    for i in range(seats):  # seat cushions
        x = -w / 2 + arm_w + (i + 0.5) * cw
        parts.append(box((x, lift + 0.2 + (sh - 0.2) / 2, 0.08), (cw - 0.02, sh - 0.2, d - 0.2)))
    parts.append(box((0, lift + bh / 2, -d / 2 + 0.1), (w, bh, 0.2)))
    if arms:
        parts += [box((sx * (w / 2 - arm_w / 2), lift + 0.3, 0), (arm_w, 0.6, d)) for sx in (-1, 1)]
    if legs:
        parts += _legs(w - 0.1, d - 0.1, lift, 0.05)
    if chaise:  # L-shape: an extension forward on the +x side
        ext = _j(rng, 0.7)
        x = w / 2 - arm_w - cw / 2
        parts.append(box((x, lift + 0.1, d / 2 + ext / 2), (cw + 2 * arm_w * 0.5, 0.2, ext)))
        parts.append(box((x, lift + 0.2 + (sh - 0.2) / 2, d / 2 + ext / 2 - 0.02), (cw - 0.02, sh - 0.2, ext)))
    return parts, Symmetry.NONE


def sofa_three(rng):
    return _sofa(rng)


def sofa_loveseat(rng):
    return _sofa(rng, w=1.45, seats=2)


def sofa_l_shaped(rng):
    return _sofa(rng, w=2.3, seats=3, chaise=True)


def sofa_armless(rng):
    return _sofa(rng, w=1.7, seats=2, arms=False)


def sofa_legs(rng):
    return _sofa(rng, w=1.9, seats=3, legs=True)


def sofa_high_back(rng):
    return _sofa(rng, w=2.2, d=1.0, seats=4, high_back=True)


# ----------------------------------------------------------------------------- beds
def _bed(rng, w=1.0, l=2.0, head=0.9, foot=0.0, lift=0.25, posts=False, platform=False):
    w, l = _j(rng, w), _j(rng, l)
    mh = 0.22
    parts = [box((0, lift / 2, 0), (w, lift, l) if platform else (w, 0.1, l))]
    if not platform:
        parts[0] = box((0, lift - 0.05, 0), (w, 0.1, l))
        parts += _legs(w, l, lift - 0.1, 0.06)
    parts.append(box((0, lift + mh / 2, 0.02), (w - 0.04, mh, l - 0.08)))  # mattress
    parts.append(box((0, lift + mh + 0.05, -l / 2 + 0.25), (w * 0.7, 0.1, 0.35)))  # pillow
    if head:
        parts.append(box((0, head / 2, -l / 2 + 0.03), (w, head, 0.06)))
    if foot:
        parts.append(box((0, foot / 2, l / 2 - 0.03), (w, foot, 0.06)))
    if posts:
        parts += [box((sx * (w / 2 - 0.03), 0.9, sz * (l / 2 - 0.03)), (0.06, 1.8, 0.06))
                  for sx in (-1, 1) for sz in (-1, 1)]
    return parts, Symmetry.NONE


def bed_single(rng):
    return _bed(rng)


def bed_double(rng):
    return _bed(rng, w=1.6, foot=0.55)


def bed_platform(rng):
    return _bed(rng, w=1.5, head=0.0, lift=0.18, platform=True)


def bed_tall_head(rng):
    return _bed(rng, w=1.4, head=1.3)


def bed_four_poster(rng):
    return _bed(rng, w=1.5, head=0.8, posts=True)


def bed_bunk(rng):
    w, l = _j(rng, 0.95), _j(rng, 2.0)
    parts = []
    for y in (0.3, 1.3):
        parts += [box((0, y, 0), (w, 0.08, l)), box((0, y + 0.12, 0), (w - 0.04, 0.16, l - 0.06))]
    parts += [box((sx * (w / 2 - 0.03), 0.85, sz * (l / 2 - 0.03)), (0.06, 1.7, 0.06))
              for sx in (-1, 1) for sz in (-1, 1)]
    parts += [box((w / 2, y, l / 2 - 0.25), (0.03, 0.03, 0.4)) for y in (0.6, 0.85, 1.1)]  # ladder
    parts.append(box((0, 1.6, 0), (0.03, 0.15, l)))  # rail
    return parts, Symmetry.NONE


# ----------------------------------------------------------------------------- bathtubs
def _tub_walls(w, l, h, t):
    return [box((0, 0.04, 0), (w, 0.08, l))] + \
        [box((sx * (w / 2 - t / 2), h / 2, 0), (t, h, l)) for sx in (-1, 1)] + \
        [box((0, h / 2, sz * (l / 2 - t / 2)), (w - 2 * t, h, t)) for sz in (-1, 1)]


def bathtub_box(rng):
    return _tub_walls(_j(rng, 0.75), _j(rng, 1.7), _j(rng, 0.55), 0.08), Symmetry.ROTATE_UP_2


def bathtub_panel_tap(rng):
    w, l, h = _j(rng, 0.8), _j(rng, 1.6), _j(rng, 0.58)
    parts = _tub_walls(w, l, h, 0.1)
    parts += [box((0, h + 0.08, -l / 2 + 0.05), (0.04, 0.16, 0.04)), box((0, h + 0.15, -l / 2 + 0.12), (0.04, 0.03, 0.14))]
    return parts, Symmetry.NONE


def bathtub_legs(rng):
    w, l, h = _j(rng, 0.75), _j(rng, 1.6), _j(rng, 0.45)
    lift = 0.15
    parts = [m.apply_translation((0, lift, 0)) for m in _tub_walls(w, l, h, 0.05)]
    parts += _legs(w - 0.1, l - 0.2, lift, 0.06, round_=True)
    return parts, Symmetry.ROTATE_UP_2


def bathtub_oval(rng):
    w, l, h = _j(rng, 0.8), _j(rng, 1.7), _j(rng, 0.6)
    parts = [ring((0, h / 2, 0), w / 2, w / 2 - 0.06, h, sections=40, squash_z=l / w),
             cylinder((0, 0.04, 0), w / 2 - 0.03, 0.08, sections=40)]
    parts[1].apply_scale((1.0, 1.0, l / w))
    return parts, Symmetry.ROTATE_UP_2


def bathtub_corner(rng):
    s, h = _j(rng, 1.3), _j(rng, 0.55)
    parts = [box((0, 0.04, 0), (s, 0.08, s))]
    parts += [box((-s / 2 + 0.05, h / 2, 0), (0.1, h, s)), box((0, h / 2, -s / 2 + 0.05), (s, h, 0.1))]
    for k in range(6):  # rounded front rim: segments of a quarter circle around the back corner
        a = (k + 0.5) / 6 * np.pi / 2
        r = s - 0.05
        c = (-s / 2 + r * np.sin(a), h / 2, -s / 2 + r * np.cos(a))
        parts.append(box(c, (0.1, h, r * np.pi / 12 + 0.03), yaw=a + np.pi / 2))
    return parts, Symmetry.NONE


def bathtub_deep(rng):
    w, l, h = _j(rng, 1.0), _j(rng, 1.4), _j(rng, 0.75)
    parts = _tub_walls(w, l, h, 0.09)
    parts.append(box((0, 0.22, -l / 2 + 0.25), (w - 0.2, 0.06, 0.3)))  # seat step
    return parts, Symmetry.NONE


# ----------------------------------------------------------------------------- bins
def bin_round(rng):
    r, h = _j(rng, 0.15), _j(rng, 0.35)
    return [ring((0, h / 2, 0), r, r - 0.01, h, sections=40), cylinder((0, 0.005, 0), r, 0.01, sections=40)], \
        Symmetry.ROTATE_UP_INF


def bin_tapered(rng):
    r, h = _j(rng, 0.13), _j(rng, 0.4)
    return [ring((0, h / 2, 0), r, r - 0.01, h, sections=40, top_scale=1.35),
            cylinder((0, 0.005, 0), r, 0.01, sections=40)], Symmetry.ROTATE_UP_INF


def bin_lidded(rng):
    r, h = _j(rng, 0.16), _j(rng, 0.55)
    return [cylinder((0, h / 2, 0), r, h, sections=40), cylinder((0, h + 0.02, 0), r + 0.01, 0.04, sections=40),
            cylinder((0, h + 0.06, 0), 0.04, 0.04, sections=20)], Symmetry.ROTATE_UP_INF


def bin_square(rng):
    s, h = _j(rng, 0.3), _j(rng, 0.45)
    t = 0.012
    parts = [box((0, t / 2, 0), (s, t, s))]
    parts += [box((sx * (s / 2 - t / 2), h / 2, 0), (t, h, s)) for sx in (-1, 1)]
    parts += [box((0, h / 2, sz * (s / 2 - t / 2)), (s - 2 * t, h, t)) for sz in (-1, 1)]
    return parts, Symmetry.ROTATE_UP_4


def bin_rect(rng):
    w, d, h = _j(rng, 0.4), _j(rng, 0.25), _j(rng, 0.5)
    t = 0.012
    parts = [box((0, t / 2, 0), (w, t, d))]
    parts += [box((sx * (w / 2 - t / 2), h / 2, 0), (t, h, d)) for sx in (-1, 1)]
    parts += [box((0, h / 2, sz * (d / 2 - t / 2)), (w - 2 * t, h, t)) for sz in (-1, 1)]
    return parts, Symmetry.ROTATE_UP_2


def bin_pedal(rng):
    r, h = _j(rng, 0.14), _j(rng, 0.42)
    return [cylinder((0, h / 2, 0), r, h, sections=40), cylinder((0, h + 0.01, -0.01), r + 0.005, 0.02, sections=40),
            box((0, 0.03, r + 0.04), (0.1, 0.02, 0.1)), box((0, h + 0.03, -r), (0.08, 0.04, 0.03))], Symmetry.NONE


BUILDERS: dict[str, list[tuple[str, Builder]]] = {
    "bathtub": [("box", bathtub_box), ("panel_tap", bathtub_panel_tap), ("clawfoot", bathtub_legs),
                ("oval", bathtub_oval), ("corner", bathtub_corner), ("deep_seat", bathtub_deep)],
    "bed": [("single", bed_single), ("double_footboard", bed_double), ("platform", bed_platform),
            ("tall_headboard", bed_tall_head), ("four_poster", bed_four_poster), ("bunk", bed_bunk)],
    "bin": [("round_open", bin_round), ("square", bin_square), ("round_lidded", bin_lidded),
            ("rectangular", bin_rect), ("pedal", bin_pedal), ("tapered", bin_tapered)],
    "bookcase": [("two_shelf", bookcase_2), ("three_shelf", bookcase_3), ("five_shelf", bookcase_5),
                 ("wide_low", bookcase_wide), ("open_back", bookcase_open), ("with_doors", bookcase_doors)],
    "cabinet": [("single_door", cabinet_single), ("double_door", cabinet_double), ("drawers", cabinet_drawers),
                ("wardrobe", cabinet_wardrobe), ("on_legs", cabinet_legs), ("sideboard", cabinet_sideboard)],
    "chair": [("plain", chair_plain), ("arms", chair_arms), ("slatted", chair_slats), ("stool", chair_stool),
              ("office", chair_office), ("lounge", chair_lounge), ("ladder_back", chair_ladder)],
    "display": [("flat", display_flat), ("crt", display_crt), ("tv", display_tv), ("round_base", display_round_base),
                ("portrait", display_portrait), ("curved_wide", display_ultrawide)],
    "sofa": [("three_seat", sofa_three), ("loveseat", sofa_loveseat), ("l_shaped", sofa_l_shaped),
             ("armless", sofa_armless), ("on_legs", sofa_legs), ("high_back", sofa_high_back)],
    "table": [("rectangular", table_rect), ("square", table_square), ("round_pedestal", table_round_pedestal),
              ("round_four_legs", table_round_legs), ("glass_trestle", table_glass_trestle),
              ("coffee", table_coffee), ("desk", table_desk)],
}
