"""dedup: find near-duplicate product images with a siamese embedding, FAISS and a SQL catalog.

Importing this package is cheap: TensorFlow, FAISS and SQLAlchemy load only when a job needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
