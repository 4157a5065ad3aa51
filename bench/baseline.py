"""The baseline: face_recognition's default pipeline, its api.py's steps called on dlib directly."""

from __future__ import annotations

import io
import time

import dlib
import numpy as np
from PIL import Image

from emulator.face.models import model_paths

Box = tuple[int, int, int, int]


class Baseline:
    """face_recognition's api.py steps, called on dlib directly: HOG with upsample 1 on the full image
    (``face_locations``), the 5-point landmarks and ``compute_face_descriptor(image, shape, num_jitters=1)``
    (``face_encodings``)."""

    def __init__(self) -> None:
        paths = model_paths()
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(paths.shape_predictor))
        self.encoder = dlib.face_recognition_model_v1(str(paths.face_recognition))

    def faces(self, rgb: np.ndarray) -> list[tuple[dlib.rectangle, np.ndarray]]:
        """``face_encodings(rgb)``: every face's detection box and descriptor."""
        found = []
        for rect in self.detector(rgb, 1):
            shape = self.predictor(rgb, rect)
            found.append((rect, np.asarray(self.encoder.compute_face_descriptor(rgb, shape, 1), dtype=np.float64)))
        return found

    def pipeline(self, data: bytes) -> int:
        """``face_recognition.load_image_file`` (Pillow, RGB) and ``face_encodings`` of a photo; its face count."""
        return len(self.faces(np.array(Image.open(io.BytesIO(data)).convert("RGB"))))

    def run(self, rgb: np.ndarray) -> tuple[list[Box], list[np.ndarray], float]:
        """The faces of ``rgb``: boxes clipped to the image, unit-length descriptors, and the seconds it took."""
        start = time.perf_counter()
        found = self.faces(rgb)
        height, width = rgb.shape[:2]
        boxes = [(max(r.left(), 0), max(r.top(), 0), min(r.right(), width), min(r.bottom(), height)) for r, _ in found]
        embeddings = [vec / np.linalg.norm(vec) for _, vec in found]
        return boxes, embeddings, time.perf_counter() - start
