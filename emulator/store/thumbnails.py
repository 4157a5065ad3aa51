"""Reads of the face thumbnails kept for the demo page (written by ``SpaceWriter.add_face``)."""

from __future__ import annotations

from emulator.store.sqlite import SqliteStore
from emulator.types import ClientId


def read_thumbnail(store: SqliteStore, face_id: int, client: ClientId | None = None) -> bytes | None:
    """The JPEG thumbnail of a face, or None if the face is gone or has none.

    Face ids are unique across clients. With ``client``, a face of another client is not found.
    """
    if client is None:
        rows = store.query("SELECT thumbnail FROM faces WHERE id = ?", (face_id,))
    else:
        rows = store.query("SELECT thumbnail FROM faces WHERE id = ? AND client = ?", (face_id, client))
    if not rows or rows[0][0] is None:
        return None
    return bytes(rows[0][0])
