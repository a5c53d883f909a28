"""Native (C++) log lines of TensorFlow Lite and the converter, routed through :mod:`logging`.

LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` straight to file
descriptor 2 each time an interpreter allocates its tensors, and the TFLite converter prints absl
lines the same way; no Python setting silences them. :func:`native_stderr_to_log` points descriptor 2
at a temporary file for the duration of such a call, then hands each captured line to a logger (INFO
lines at INFO, the others at WARNING), so ``-q`` and the log level decide what a user sees.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: One capture at a time: descriptor 2 is process-wide.
_LOCK = threading.Lock()


@contextmanager
def native_stderr_to_log(logger: logging.Logger) -> Iterator[None]:
    """Capture what native code writes to descriptor 2 inside the block, and log it through ``logger``.

    Python's own ``sys.stderr`` output in the block is captured too, and logged the same way; nothing is
    lost. Where descriptor 2 cannot be redirected (no such descriptor), the block runs as it is.
    """
    with _LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except ValueError:
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
    for line in text.splitlines():
        line = line.strip()
        if line:
            level = logging.INFO if line.startswith("INFO:") else logging.WARNING
            logger.log(level, "%s", line)
