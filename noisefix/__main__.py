"""`python -m noisefix ...`, and `torchrun --nproc-per-node N -m noisefix probe|train ...` for data-parallel runs."""

from noisefix.cli import main

if __name__ == "__main__":
    main()
