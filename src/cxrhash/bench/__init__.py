"""`cxrhash bench`: run a grid of methods × bits × seeds and write the paper-style report."""
