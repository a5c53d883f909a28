"""The embedding: tower network, siamese training wrapper, losses, inference encoder, model card.

Importing this package does not import TensorFlow; :func:`load_encoder` picks a runtime on use.
"""

from __future__ import annotations

from dedup.embedding.encoder import Encoder, load_encoder

__all__ = ["Encoder", "load_encoder"]
