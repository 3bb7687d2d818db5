"""``python -m launcher``: the ``neurostream`` command."""

from launcher.cli import main

if __name__ == "__main__":
    main()
