"""cxrhash: content-based retrieval of chest radiographs by deep hashing."""

__version__ = "0.1.0"
