"""``python -m emulator`` is ``smarty-emulator``."""

from emulator.cli import main

if __name__ == "__main__":  # worker processes (spawn, forkserver) import this module again: do not serve there
    raise SystemExit(main())
