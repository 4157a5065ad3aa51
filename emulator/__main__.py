"""``python -m emulator`` is ``smarty-emulator``."""

from emulator.cli import main

raise SystemExit(main())
