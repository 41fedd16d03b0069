"""Matplotlib style of the original notebooks and atomic PNG + PDF saving.

The original sets ``pdf.fonttype`` and ``ps.fonttype`` to 42 (TrueType glyphs embedded, so the text
stays editable in Illustrator) and a sans-serif font family (spec §9).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from nejm_b2txt_utils.atomic_io import atomic_open

log = logging.getLogger(__name__)

SYNTHETIC_SUFFIX = " (synthetic data)"


def apply_style() -> None:
    """The original's rcParams: TrueType (Type 42) fonts in PDF/PS, sans-serif text."""
    mpl.rcParams["pdf.fonttype"] = 42
    mpl.rcParams["ps.fonttype"] = 42
    mpl.rcParams["font.family"] = "sans-serif"


def synthetic_title(title: str, synthetic: bool) -> str:
    """``title`` with ``" (synthetic data)"`` appended when the figure is drawn from synthetic data."""
    return title + SYNTHETIC_SUFFIX if synthetic else title


def mark_synthetic(fig: Figure, synthetic: bool, what: str) -> None:
    """Give an otherwise untitled figure a suptitle saying it shows synthetic data."""
    if synthetic:
        fig.suptitle(synthetic_title(what, True))


def save_figure(fig: Figure, path_without_ext: str | os.PathLike, formats: Iterable[str] = ("png", "pdf"),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.pdf`` (each atomically, ``nejm_b2txt_utils.atomic_io``); returns the paths."""
    base = Path(path_without_ext)
    out = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        with atomic_open(target, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(target)
    log.info("saved %s", ", ".join(str(p) for p in out))
    return out
