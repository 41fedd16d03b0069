"""Long native calls (the lattice pass, the n-best search) that a stop signal must not wait for.

Python runs a signal handler only between bytecodes, so a SIGTERM that arrives during a seconds-long C++ call
(kaldi-decoder's lattice pass, OpenFST's epsilon removal) waited for it to return: the server ignored SIGTERM for
20-30 s on ambiguous logits. A server process calls :func:`stop_signals_end_native_calls` once; from then on
SIGTERM and SIGINT take their default action (the process ends at once) while :func:`native_call` is active, and
its own handlers (finish the message, then stop) everywhere else. Without that call (tests, library use)
:func:`native_call` does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_enabled = False


def stop_signals_end_native_calls(enabled: bool = True) -> None:
    """Let SIGTERM/SIGINT end the process during :func:`native_call` blocks of the main thread.

    Args:
        enabled: switch it on (a server process) or off.
    """
    global _enabled
    _enabled = enabled


@contextmanager
def native_call() -> Iterator[None]:
    """Run the block with SIGTERM/SIGINT at their default action (when switched on, in the main thread)."""
    if not _enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
