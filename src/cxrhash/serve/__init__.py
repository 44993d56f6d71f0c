"""The retrieval server (issue #13, first increment): a FastAPI app over an index and its
model, built by :func:`create_app`; ``cxrhash serve`` runs it with uvicorn."""

from __future__ import annotations

from cxrhash.serve.app import DEFAULT_MAX_UPLOAD_BYTES, create_app

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "create_app"]
