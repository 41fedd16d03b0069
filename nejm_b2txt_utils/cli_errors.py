"""Bad input in entry scripts: one typed error and one way to report it (one line on stderr, exit 2).

A config key, command-line flag or input file the user must change raises :class:`ConfigError` where
the value is checked (with a message that names the key or file, the value and what was expected).
Entry scripts wrap ``main`` with :func:`exit_2_on_bad_input`, which turns that error (and the
input-error types the script names) into ``error: <message>`` and exit status 2. Anything else
still raises with its traceback: a bug must stay visible.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it

F = TypeVar("F", bound=Callable[..., int])


class ConfigError(ValueError):
    """A config key, flag or input with an unusable value; the message names it and what was expected."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (inner newlines and runs of spaces collapsed).

    Args:
        exc: any exception.

    Returns:
        ``str(exc)`` with all whitespace runs replaced by one space (the class name if the message is empty).
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def print_line(line: str) -> None:
    """Print one line on stderr on a line of its own: above any tqdm progress bar on screen (``tqdm.write``, when
    tqdm is loaded) instead of at the end of the bar's line (was ``sentences: 0sent [00:00, ?sent/s]error: ...``).

    Args:
        line: the text, without a newline.
    """
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        tqdm_module.tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def print_bad_input(exc: BaseException) -> int:
    """Print ``error: <message>`` as one line on stderr.

    Args:
        exc: the input error to report.

    Returns:
        :data:`EXIT_BAD_INPUT` (2), for ``return print_bad_input(exc)`` in a ``main``.
    """
    print_line(f"error: {one_line(exc)}")
    return EXIT_BAD_INPUT


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's ``KeyboardInterrupt`` so that ``finally`` blocks and
    ``TemporaryDirectory`` clean-ups run (the default SIGTERM ends the process on the spot and left a killed
    benchmark's temporary folders, hundreds of MB, behind)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread; the previous handler is restored.

    Only where SIGTERM still has its default action and this is the main thread: a handler someone installed
    (a server's graceful stop, a test runner's) is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_2_on_bad_input(*extra: type[BaseException]) -> Callable[[F], F]:
    """Decorator for an entry script's ``main(argv) -> int``.

    Args:
        extra: further exception types that mean bad input for this script (e.g. a corrupt data
            file's ``T15FormatError``); :class:`ConfigError` is always included.

    Returns:
        A decorator; the wrapped ``main`` returns 2 after printing one line when one of the types is raised, and
        130 after one line on Ctrl-C or SIGTERM (was a ``KeyboardInterrupt`` traceback, or for SIGTERM an
        instant death that skipped every clean-up; the scripts write atomically, so nothing half-written is left).
    """
    types = (ConfigError, *extra)

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def wrapped(*args, **kwargs) -> int:
            try:
                with sigterm_as_interrupt():
                    return main(*args, **kwargs)
            except types as exc:
                return print_bad_input(exc)
            except Terminated:
                print_line("interrupted (SIGTERM); nothing half-written was kept")
                return EXIT_INTERRUPTED
            except KeyboardInterrupt:
                print_line("interrupted (Ctrl-C); nothing half-written was kept")
                return EXIT_INTERRUPTED

        return wrapped  # type: ignore[return-value]

    return wrap


def check_flags(args: object, minima: dict[str, float]) -> None:
    """Check numeric command-line flags against their least allowed value.

    Args:
        args: an ``argparse.Namespace`` (or any object with the attributes).
        minima: ``{flag name without dashes: least allowed value}``; a flag that is ``None`` (not given) passes.

    Raises:
        ConfigError: ``--<name>: expected a number >= <least>, got <value>`` for the first flag out of range
            (NaN included).
    """
    for name, least in minima.items():
        value = getattr(args, name)
        if value is not None and not value >= least:
            raise ConfigError(f"--{name}: expected a number >= {least}, got {value}")


def _first_existing_parent_is_dir(flag: str, path: Path) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder; expected a writable folder")
            return


def check_output_file(flag: str, path: str | os.PathLike | None) -> None:
    """Check a flag naming a file the script writes at the end, before any work (was an ``IsADirectoryError``
    or ``NotADirectoryError`` traceback after the whole run).

    Args:
        flag: the flag's name as typed (``"--out"``), for the message.
        path: its value; None (not given) passes.

    Raises:
        ConfigError: the path is an existing folder or non-regular file, or lies below a file.
    """
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; expected a file path")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{flag} {path}: exists and is not a regular file; expected a file path")
    _first_existing_parent_is_dir(flag, path)


def check_output_folder(flag: str, path: str | os.PathLike | None) -> None:
    """Check a flag naming a folder the script creates or writes into, before any work (was a
    ``NotADirectoryError`` or ``FileExistsError`` traceback when the first file was written).

    Args:
        flag: the flag's name as typed (``"--work"``), for the message.
        path: its value; None (not given) passes.

    Raises:
        ConfigError: the path exists and is not a folder, or lies below a file.
    """
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a folder; expected a folder (created if missing)")
    _first_existing_parent_is_dir(flag, path)
