"""The error hierarchy of dedup and the process exit codes it maps to.

Library code raises these; only the command line turns them into messages and exit codes
(one place, ``dedup.cli``), so scripts can rely on the codes below.
"""

from __future__ import annotations

#: Every file went in / the command did what was asked.
EXIT_OK = 0
#: An unexpected internal error (a bug): the message and a traceback hint are printed.
EXIT_INTERNAL = 1
#: The command line was wrong (unknown option, missing argument, bad value).
EXIT_USAGE = 2
#: The job finished but some inputs failed (e.g. ingest: some files could not be read).
EXIT_PARTIAL = 3
#: The store or database could not be opened or is inconsistent in a way we cannot repair.
EXIT_STORE = 4
#: The embedding model could not be loaded or does not match the store.
EXIT_MODEL = 5
#: A named input (image, folder, CSV) does not exist or cannot be used at all.
EXIT_INPUT = 6
#: ``report`` found duplicates (lets cron and CI act on it; 0 means none were found).
EXIT_DUPLICATES_FOUND = 10
#: Interrupted by the user (Ctrl-C); the catalog stays consistent and the next run completes.
EXIT_INTERRUPTED = 130


class DedupError(Exception):
    """Base class of every error dedup raises on purpose."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(DedupError):
    """A setting or argument is invalid."""

    exit_code = EXIT_USAGE


class InputError(DedupError):
    """A named input (file, folder, CSV) is missing or unusable."""

    exit_code = EXIT_INPUT


class ImageError(DedupError):
    """One image could not be used.

    ``kind`` is a short machine-readable reason: ``empty``, ``not_image``, ``truncated``, ``corrupt``,
    ``too_large`` (bytes, pixels or decoded memory over a limit), ``out_of_memory``, ``not_regular_file``
    (a named pipe, a device), ``dangling_link``, ``link_loop``, ``decoder_died`` (its decoding worker
    died on it), ``io``; ``reason`` is for people.
    """

    exit_code = EXIT_INPUT

    def __init__(self, path: str, kind: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.kind = kind
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, str]]:
        # Rebuilt from its fields, so it comes back intact from a decoding process.
        return type(self), (self.path, self.kind, self.reason)


class StoreError(DedupError):
    """The catalog or index cannot be opened, migrated or kept consistent."""

    exit_code = EXIT_STORE


class ModelError(DedupError):
    """The embedding model cannot be loaded, or does not match the store."""

    exit_code = EXIT_MODEL
