"""Face engine: image decoding, detection, landmarks and embeddings (dlib lives here and nowhere else)."""

from emulator.face.decode import ImageError, ImageTooLarge, ImageTooSmall, UnknownImageType, decode_image
from emulator.face.engine import DlibEngine, Face, FaceEngine

__all__ = [
    "DlibEngine",
    "Face",
    "FaceEngine",
    "ImageError",
    "ImageTooLarge",
    "ImageTooSmall",
    "UnknownImageType",
    "decode_image",
]
