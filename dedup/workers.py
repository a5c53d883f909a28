"""Worker processes that never outlive the process that started them, and leave Ctrl-C to it.

A pool worker blocks reading its next task from a pipe that it also holds the write end of (a forked
child inherits every descriptor), so if the parent is killed outright (SIGKILL, the out-of-memory
killer) the worker would wait forever, holding memory and the parent's output pipes. Workers started
with :func:`init_worker` as their initializer ask Linux to kill them when their parent dies. Ctrl-C
reaches every process of the terminal's group: workers ignore it, so the parent alone stops the work
and shuts its pool down (rather than each worker dying with a traceback of its own).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def init_worker() -> None:
    """Process-pool ``initializer``: ignore SIGINT, and die with the parent (:func:`die_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def die_with_parent() -> None:
    """Have this process killed when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing).

    If the parent is already gone when it runs, exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return
    except (OSError, AttributeError) as exc:
        log.debug("prctl unavailable: %s", exc)
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
