"""``python -m probe``: the `probe` command, for environments whose scripts folder is not on PATH."""

from probe.cli import main

if __name__ == "__main__":
    main()
