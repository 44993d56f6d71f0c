"""``python -m cxrhash``: the command line (what ``torchrun -m cxrhash`` starts per process)."""

from cxrhash.cli import main

if __name__ == "__main__":
    main()
