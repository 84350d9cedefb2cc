"""``python -m prunebench``: the command line (what torchrun and ``--nproc`` start per rank)."""

from prunebench.cli import main

if __name__ == "__main__":
    main()
