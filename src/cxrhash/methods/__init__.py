"""Hashing methods, registered by name; importing this package registers them all."""

from cxrhash.methods import attention_fusion  # noqa: F401  (registers the method)
from cxrhash.methods.base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method"]
