"""Reading and writing the analysis pickles (``t15_copyTask.pkl``, ``t15_personalUse.pkl``); atomic output.

Format errors are :class:`PklFormatError` with a message that names the file and the key.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nejm_b2txt_utils.atomic_io import atomic_write_pickle


class PklFormatError(ValueError):
    """A pickle does not have the structure the figures expect (message names file and key)."""


def read_pickle(path: str | os.PathLike, what: str) -> Any:
    """Unpickle ``path``; ``what`` names the expected content in the error messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise PklFormatError(f"{path}: not a readable pickle of {what} ({exc})") from exc


def write_pickle(obj: Any, path: str | os.PathLike) -> Path:
    """Pickle ``obj`` to ``path`` atomically (``nejm_b2txt_utils.atomic_io``)."""
    return atomic_write_pickle(path, obj)


def require_keys(data: Any, keys: tuple[str, ...], source: str, where: str = "") -> None:
    """Raise :class:`PklFormatError` naming the first missing key of ``data`` (a mapping)."""
    label = f"{where} " if where else ""
    if not isinstance(data, Mapping):
        raise PklFormatError(f"{source}: {label or 'top level '}is a {type(data).__name__}, expected a dict "
                             f"with keys {list(keys)}")
    for key in keys:
        if key not in data:
            raise PklFormatError(f"{source}: {label}missing key {key!r} (expected keys: {', '.join(keys)})")


def check_parallel(data: Mapping, keys: tuple[str, ...], source: str, where: str = "") -> int:
    """All ``keys`` hold sequences of the same length; returns that length."""
    prefix = f"{where}" if where else ""
    lengths = {}
    for key in keys:
        try:
            lengths[key] = len(data[key])
        except TypeError as exc:
            raise PklFormatError(f"{source}: {prefix}[{key!r}] is a {type(data[key]).__name__}, "
                                 "expected a per-trial sequence") from exc
    if len(set(lengths.values())) > 1:
        raise PklFormatError(f"{source}: per-trial fields differ in length: "
                             + ", ".join(f"{prefix}[{k!r}]={n}" for k, n in lengths.items()))
    return next(iter(lengths.values()), 0)
