"""smarty-emulator: an offline emulator of the Smarty persons API (VK Cloud Vision)."""

__version__ = "0.1.0"
