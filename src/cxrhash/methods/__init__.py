"""Hashing methods, registered by name; importing this package registers them all."""

from cxrhash.methods import (  # noqa: F401  (each module registers its method)
    ath,
    attention_fusion,
    dh,
    dpsh,
    drh,
    dsh,
    hashnet,
    osdh,
    saliency_fusion,
    semantic_attention,
)
from cxrhash.methods.base import METHODS, EpochInfo, Method, register_method

__all__ = ["METHODS", "EpochInfo", "Method", "register_method"]
