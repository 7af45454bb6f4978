"""The class list and the symmetry tags of ROCA's ScanNet25k / Scan2CAD setting.

Class indices are 0-based into ``CLASS_NAMES`` everywhere in roca (messages, JSON, CAD
database). torchvision's detection heads reserve label 0 for the background, so detection
labels are ``class_index + 1``; convert with :func:`label_to_class_index` and back.
"""
from __future__ import annotations

import enum

# Alphabetical, as in the reference implementation.
CLASS_NAMES: tuple[str, ...] = (
    "bathtub", "bed", "bin", "bookcase", "cabinet", "chair", "display", "sofa", "table",
)
# The Scan2CAD "benchmark" classes: all but bed.
BENCHMARK_CLASSES: tuple[str, ...] = tuple(c for c in CLASS_NAMES if c != "bed")


class Symmetry(enum.IntEnum):
    """Rotational symmetry about the CAD model's up (y) axis.

    The integer values match ``roca_msgs/CadModelInfo`` (255 stands for "infinite").
    """

    NONE = 0
    ROTATE_UP_2 = 2
    ROTATE_UP_4 = 4
    ROTATE_UP_INF = 255

    @property
    def tag(self) -> str:
        """The string used by the Scan2CAD annotation files, e.g. ``__SYM_ROTATE_UP_2``."""
        return "__SYM_" + self.name

    @classmethod
    def from_tag(cls, tag: "str | int | Symmetry") -> "Symmetry":
        """Parse ``__SYM_NONE``-style tags, plain names (``rotate_up_4``, ``none``) or ints."""
        if isinstance(tag, Symmetry):
            return tag
        if isinstance(tag, int):
            return cls(tag)
        name = str(tag).strip().upper()
        if name.startswith("__SYM_"):
            name = name[len("__SYM_"):]
        aliases = {"2": "ROTATE_UP_2", "4": "ROTATE_UP_4", "INF": "ROTATE_UP_INF", "INFINITE": "ROTATE_UP_INF"}
        name = aliases.get(name, name)
        try:
            return cls[name]
        except KeyError:
            raise ValueError(
                f"unknown symmetry tag {tag!r}; expected one of "
                f"{[s.tag for s in cls]} or none/2/4/inf") from None

    @property
    def num_rotations(self) -> int:
        """How many rotations about the up axis the metric tries (36 for "infinite")."""
        return {Symmetry.NONE: 1, Symmetry.ROTATE_UP_2: 2, Symmetry.ROTATE_UP_4: 4,
                Symmetry.ROTATE_UP_INF: 36}[self]


def class_index(name: str, class_names: "tuple[str, ...] | list[str]" = CLASS_NAMES) -> int:
    """Index of ``name`` in ``class_names`` with a clear error for unknown names."""
    try:
        return list(class_names).index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; known classes: {list(class_names)}") from None


def label_to_class_index(label: int) -> int:
    """torchvision detection label (1-based, 0 = background) to class index."""
    return int(label) - 1


def class_index_to_label(index: int) -> int:
    """Class index to torchvision detection label."""
    return int(index) + 1
