"""Reads and writes of the keeper rules' pixel signals (``image_signals``), each inside a caller's session.

The signals are a cache keyed by content: losing them costs a re-read of the files, never a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dedup.catalog.models import ImageSignals
from dedup.catalog.reads import chunked

#: One content's signals: the thumbnail's bytes, the detail measure, and the JPEG quality (None unless a JPEG).
SignalRow = tuple[bytes, float, float | None]


def read_signals(session: Session, sha256s: Iterable[str], version: int) -> dict[str, SignalRow]:
    """Stored (thumbnail bytes, detail, JPEG quality) by sha256, for the contents that have them in ``version``."""
    out: dict[str, SignalRow] = {}
    for chunk in chunked(sorted(set(sha256s))):
        stmt = select(ImageSignals.sha256, ImageSignals.thumb, ImageSignals.detail, ImageSignals.jpeg_quality).where(
            ImageSignals.sha256.in_(chunk), ImageSignals.version == version
        )
        out.update((sha, (thumb, detail, quality)) for sha, thumb, detail, quality in session.execute(stmt))
    return out


def save_signals(session: Session, signals: Mapping[str, SignalRow], version: int) -> None:
    """Store signals by sha256, replacing rows of any version."""
    keys = sorted(signals)
    for chunk in chunked(keys):
        session.execute(delete(ImageSignals).where(ImageSignals.sha256.in_(chunk)))
    session.add_all(
        ImageSignals(
            sha256=sha,
            version=version,
            thumb=signals[sha][0],
            detail=float(signals[sha][1]),
            jpeg_quality=signals[sha][2],
        )
        for sha in keys
    )
