"""``python -m cxrhash.cli``: the same as the ``cxrhash`` command."""

from cxrhash.cli import main

main()
