"""Rendering duplicate reports (JSON, CSV)."""

from dedup.report.render import render_report

__all__ = ["render_report"]
