"""Moved to :mod:`cxrhash.data.labels`; re-exported for the importers not yet updated."""

from cxrhash.data.labels import label_names, relevance_labels, with_no_finding, with_no_finding_np

__all__ = ["label_names", "relevance_labels", "with_no_finding", "with_no_finding_np"]
