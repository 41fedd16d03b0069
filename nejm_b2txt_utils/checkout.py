"""Which checkout the code runs from: a warning when it is not the one the user stands in.

The environments made by ``setup.sh``/``setup_lm.sh`` put the checkout that created them on ``sys.path`` (a
``.pth`` file, what ``pip install -e .`` does). Run ``python -m ...`` from a second clone with those environments
and the first clone's code is imported, silently. :func:`warn_if_other_checkout` says so once per process.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def enclosing_checkout(start: str | os.PathLike) -> Path | None:
    """The nearest folder at or above ``start`` that holds this project (a ``nejm_b2txt_utils/__init__.py``).

    Args:
        start: a folder (usually the working directory).

    Returns:
        That folder, or None outside any checkout.
    """
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "nejm_b2txt_utils" / "__init__.py").is_file():
            return folder
    return None


def warn_if_other_checkout(cwd: str | os.PathLike | None = None) -> Path | None:
    """Warn when the working directory is inside another checkout of this project than the imported one.

    Args:
        cwd: the folder to check (default: the working directory).

    Returns:
        The other checkout, or None when they agree (or the working directory is in no checkout).
    """
    try:
        other = enclosing_checkout(cwd if cwd is not None else os.getcwd())
    except OSError:  # a deleted working directory
        return None
    if other is None or other == PACKAGE_ROOT:
        return None
    warnings.warn(f"running the code of {PACKAGE_ROOT} while the working directory is in the checkout {other}: "
                  f"this environment was set up from {PACKAGE_ROOT} (run {other}/setup.sh for one of its own, "
                  f"or set PYTHONPATH={other})", stacklevel=2)
    return other
