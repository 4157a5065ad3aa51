"""The demo page's static files (plain HTML, CSS and JavaScript; no build step), served by ``emulator.wire.ui``."""
