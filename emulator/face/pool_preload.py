"""Imported only by the analysis pool's forkserver: load and warm the models once, before any worker is forked.

Every worker is then a fork of a process that already holds warm models (shared copy-on-write), so a worker is
ready in milliseconds instead of loading ~100 MB of models itself.
"""

from __future__ import annotations

from emulator.face.engine import DlibEngine

ENGINE = DlibEngine()
ENGINE.warm_up()
