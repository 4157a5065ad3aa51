"""The record of persons and embeddings (SQLite)."""

from emulator.store.sqlite import FaceRow, SpaceData, SpaceWriter, SqliteStore, WriteDelta

__all__ = ["FaceRow", "SpaceData", "SpaceWriter", "SqliteStore", "WriteDelta"]
