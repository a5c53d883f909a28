"""Report history and review decisions: session-level reads and writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from dedup.catalog.coltypes import utcnow
from dedup.catalog.models import MARK_DECISIONS, ReportMember, ReportRun, ReviewMark

#: (cluster_id, image_id, path, is_keeper, tier, distance)
MemberRow = tuple[str, int, str, bool, str, float]


def save_report(
    session: Session,
    threshold: float,
    model_id: str,
    params: dict[str, Any],
    summary: dict[str, Any],
    members: Sequence[MemberRow],
) -> int:
    """Store one report run with all its cluster members; returns the run id."""
    run = ReportRun(
        threshold=threshold, model_id=model_id, params=dict(params), summary=dict(summary), created_at=utcnow()
    )
    session.add(run)
    session.flush()
    if not members:
        return run.id
    session.execute(
        insert(ReportMember),
        [
            {
                "run_id": run.id,
                "cluster_id": cid,
                "image_id": iid,
                "path": path,
                "is_keeper": keeper,
                "tier": tier,
                "distance": dist,
            }
            for cid, iid, path, keeper, tier, dist in members
        ],
    )
    return run.id


def run_info(session: Session, run_id: int) -> dict[str, Any] | None:
    """A report run's parameters and summary, or None."""
    run = session.get(ReportRun, run_id)
    if run is None:
        return None
    return {
        "id": run.id,
        "created_at": run.created_at.isoformat(),
        "threshold": run.threshold,
        "model_id": run.model_id,
        "params": run.params,
        "summary": run.summary,
    }


def previous_run_id(session: Session, before: int | None = None) -> int | None:
    """The newest run id (older than ``before`` when given), or None."""
    q = select(ReportRun.id).order_by(ReportRun.id.desc()).limit(1)
    if before is not None:
        q = q.where(ReportRun.id < before)
    return session.scalar(q)


def run_clusters(session: Session, run_id: int) -> dict[str, list[tuple[int, str, bool]]]:
    """Cluster id → members (image id, path, is keeper) of one run, keeper first."""
    out: dict[str, list[tuple[int, str, bool]]] = {}
    rows = session.execute(
        select(ReportMember.cluster_id, ReportMember.image_id, ReportMember.path, ReportMember.is_keeper)
        .where(ReportMember.run_id == run_id)
        .order_by(ReportMember.cluster_id, ReportMember.is_keeper.desc(), ReportMember.id)
    )
    for cid, iid, path, keeper in rows:
        out.setdefault(cid, []).append((iid, path, bool(keeper)))
    return out


def delete_run(session: Session, run_id: int) -> None:
    """Remove a report run and its members from the history."""
    session.execute(delete(ReportMember).where(ReportMember.run_id == run_id))
    session.execute(delete(ReportRun).where(ReportRun.id == run_id))


def set_mark(session: Session, a: int, b: int, decision: str, note: str | None) -> None:
    """Record (or replace) the decision on the pair {a, b}."""
    if decision not in MARK_DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(MARK_DECISIONS)}, not {decision!r}")
    if a == b:
        raise ValueError("a review mark needs two different images")
    lo, hi = min(a, b), max(a, b)
    session.execute(delete(ReviewMark).where(ReviewMark.image_a == lo, ReviewMark.image_b == hi))
    session.add(ReviewMark(image_a=lo, image_b=hi, decision=decision, note=note, created_at=utcnow()))


def clear_mark(session: Session, a: int, b: int) -> str | None:
    """Remove the decision on the pair {a, b}; returns the decision that was there, or None."""
    lo, hi = min(a, b), max(a, b)
    where = (ReviewMark.image_a == lo, ReviewMark.image_b == hi)
    decision = session.execute(select(ReviewMark.decision).where(*where)).scalar_one_or_none()
    if decision is not None:
        session.execute(delete(ReviewMark).where(*where))
    return decision


def all_marks(session: Session) -> list[tuple[int, int, str]]:
    """Every review decision as (image_a, image_b, decision), image_a < image_b."""
    rows = session.execute(select(ReviewMark.image_a, ReviewMark.image_b, ReviewMark.decision).order_by(ReviewMark.id))
    return [(int(a), int(b), str(d)) for a, b, d in rows]
