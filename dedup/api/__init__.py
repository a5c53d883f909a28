"""The HTTP API and web page (FastAPI): ``create_app(store)`` builds the app, ``serve(store)`` runs it."""

from __future__ import annotations

from dedup.api.app import create_app
from dedup.api.server import serve

__all__ = ["create_app", "serve"]
