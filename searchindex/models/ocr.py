"""Reading the text in a photo: RapidOCR (PP-OCR detection, orientation and recognition on ONNX
Runtime) for every line, Tesseract for the lines in Korean.

Both engines run offline: the ``rapidocr`` wheel ships its three ONNX models (the version is pinned
in the ``ocr`` extra, since another release may ship other models or fetch them), and Tesseract
reads its language data from the Debian packages (``tesseract-ocr-kor``).  PP-OCR's recognizer
reads Latin script, digits and Chinese but no Hangul, and no package on PyPI ships Hangul
recognition weights, so a line that may be Korean is read again by Tesseract in single-line mode
(page segmentation mode 7; its default page mode misses most Hangul in a crop) and the more
confident reading is kept.

Orientation.  Detection finds lines at any angle; a line crop taller than it is wide is turned a
quarter turn before recognition, and PP-OCR's direction classifier turns upside-down crops
upright, so text at 0, 90, 180 and 270 degrees is read without running the detector four times.

Cost.  Detection is most of it (on a photo with text, the fp32 detector's passes were three quarters
of the CPU time; recognition of a few lines, Tesseract's re-reads and decoding share the rest), so
on x86 the detector runs in int8 (:mod:`.ocrint8`: quantised and checked once per machine).  A
file is first decoded small (JPEG draft mode: an eighth of a 12 MP photo, straight from the DCT)
for a probe: one detector pass at :attr:`OcrEngine.probe_side` pixels.  A photo in which the probe
finds no text region costs that small decode and that pass and nothing else.  Otherwise the photo
is decoded again at about :attr:`OcrEngine.max_side` pixels (draft mode again) for reading, and
detection runs at :attr:`OcrEngine.det_side` pixels on the long side.  Recognition runs on all of
a photo's lines in batches; Tesseract reads again only the lines PP-OCR read as non-Latin, read
unsurely or not at all.
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import MissingExtraError, ModelError
from ..results import TextLine
from .ocrint8 import DET_PRECISIONS, default_det_precision, int8_detector, shipped_detector

__all__ = ["OCR_LANGUAGES", "RAPIDOCR_VERSION", "OcrEngine", "OcrLine", "engine_versions", "parse_languages"]

log = logging.getLogger(__name__)

#: The rapidocr release the ``ocr`` extra pins (its wheel carries PP-OCRv6 det/rec and the v2 classifier).
RAPIDOCR_VERSION = "3.10.0"

#: Languages ``--lang`` accepts: code -> Tesseract's language data name (``None``: PP-OCR alone reads it).
OCR_LANGUAGES: dict[str, str | None] = {"en": None, "ko": "kor"}

# Where Debian, Fedora and Homebrew keep Tesseract's language data (TESSDATA_PREFIX wins).
_TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                  "/usr/share/tessdata", "/usr/local/share/tessdata", "/opt/homebrew/share/tessdata")


#: One line read (the type the catalog stores and the API returns).
OcrLine = TextLine


def parse_languages(langs: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"ko,en"`` or ``["ko", "en"]`` -> ``("en", "ko")``; ``None``: English and Korean.

    Raises:
        ValueError: a language this reader does not know.
    """
    if langs is None:
        return ("en", "ko")
    items = langs.split(",") if isinstance(langs, str) else list(langs)
    codes = sorted({c.strip().lower() for c in items if c.strip()})
    unknown = [c for c in codes if c not in OCR_LANGUAGES]
    if unknown or not codes:
        raise ValueError(f"unknown OCR language {', '.join(unknown) or '(none)'}: "
                         f"choose from {', '.join(OCR_LANGUAGES)}")
    return tuple(codes)


def _is_hangul(ch: str) -> bool:
    o = ord(ch)
    return 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F


def _non_latin(text: str) -> bool:
    """Whether ``text`` holds a letter outside Latin script (PP-OCR reading Hangul gives Chinese)."""
    return any(ch.isalpha() and ord(ch) > 0x24F for ch in text)


def _tessdata() -> str | None:
    env = os.environ.get("TESSDATA_PREFIX")
    for folder in ([env, os.path.join(env, "tessdata")] if env else []) + list(_TESSDATA_DIRS):
        if folder and os.path.isfile(os.path.join(folder, "eng.traineddata")):
            return folder
    return None


def engine_versions() -> dict[str, str]:
    """The OCR engines' versions installed here ({} entries for those missing)."""
    out: dict[str, str] = {}
    try:
        from importlib.metadata import version

        out["rapidocr"] = version("rapidocr")
    except Exception:  # noqa: BLE001 - not installed: nothing to report
        pass
    try:
        import tesserocr

        out["tesseract"] = str(tesserocr.tesseract_version()).split()[1]
    except Exception:  # noqa: BLE001
        pass
    return out


def _line_boxes(boxes: Any, width: int, height: int) -> np.ndarray:
    """The detector's boxes that can be lines of text, as an (n, 4, 2) array.

    On smooth, text-free photos (sky, a wall, a gradient) the detector often answers with one
    region covering most of the frame; a line of text is never both half the width and half the
    height of the picture, so such a region is dropped (and the photo counts as text-free).
    """
    if boxes is None or len(boxes) == 0:
        return np.zeros((0, 4, 2), np.float32)
    quads = np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2)
    span = np.ptp(quads, axis=1)
    keep = ~((span[:, 0] > 0.5 * width) & (span[:, 1] > 0.5 * height))
    lines: np.ndarray = quads[keep]
    return lines


def _quad_crop(img: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The line inside ``quad`` (4 corners, clockwise from top left) straightened to a rectangle."""
    import cv2

    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return np.asarray(cv2.warpPerspective(img, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE,
                                          flags=cv2.INTER_CUBIC))


class OcrEngine:
    """Reads lines of text in images (see the module docstring); models load on first use.

    Args:
        langs: language codes of :data:`OCR_LANGUAGES` (``"ko"`` adds Tesseract's Korean reading).
        threads: ONNX Runtime and Tesseract threads (default: all cores, at most 4).
        max_side: images are scaled down to this long side before anything else.
        det_side: the detector's input long side.
        probe_side: a first detector pass at this long side decides whether the image has any text
            region at all (0: no probe); an image without one costs only this pass.
        min_confidence: lines read less confidently than this are dropped.
        precision: the text detector's: ``int8`` (about three times faster on x86; prepared and checked
            against fp32 once per machine, fp32 when that check fails), ``fp32``, or ``auto`` (int8 on
            x86 CPUs, else fp32).

    Raises:
        MissingExtraError: rapidocr (``searchindex[ocr]``) or, for Korean, tesserocr is missing.
        ModelError: Tesseract's language data for a requested language is not installed.
        ValueError: an unknown language or precision.
    """

    def __init__(self, langs: Sequence[str] | str | None = None, *, threads: int | None = None,
                 max_side: int = 1600, det_side: int = 736, probe_side: int = 352,
                 min_confidence: float = 0.5, precision: str = "auto") -> None:
        if precision not in DET_PRECISIONS:
            raise ValueError(f"unknown text detector precision {precision!r}: choose from {', '.join(DET_PRECISIONS)}")
        self.langs = parse_languages(langs)
        self.threads = threads or min(os.cpu_count() or 1, 4)
        self.max_side = max_side
        self.det_side = det_side
        self.probe_side = probe_side
        self.min_confidence = min_confidence
        self._lock = threading.Lock()
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise MissingExtraError("reading text in photos needs rapidocr", extra="ocr") from None
        # Logging through rapidocr's own colour logger at INFO for every model load is noise here.
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        # The detector file is named here, not left to rapidocr, so that the one quantised is the one
        # the fp32 path reads (and so that a wheel without it fails here rather than downloading).
        source = shipped_detector()
        if source is None:
            raise ModelError(f"rapidocr's wheel has no text detector here: pip install rapidocr=={RAPIDOCR_VERSION}")
        #: The detector's precision in use: ``int8`` (prepared once per machine, see
        #: :mod:`searchindex.models.ocrint8`) or ``fp32`` (asked for, not x86, or the int8 one was rejected).
        self.precision = "fp32"
        detector = source
        if (default_det_precision() if precision == "auto" else precision) == "int8":
            made = int8_detector(source, sides=(det_side, probe_side) if probe_side > 0 else (det_side,),
                                 threads=self.threads)
            if made is not None:
                detector, self.precision = made[0], "int8"
        self._rapid = RapidOCR(params={
            "Global.log_level": "error",
            "Det.model_path": str(detector),
            "Global.text_score": 0.0,
            "Global.max_side_len": max(max_side, det_side),
            "Det.limit_type": "max",
            "Det.limit_side_len": det_side,
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        self._tess: Any = None
        tess_langs = [name for c in self.langs if (name := OCR_LANGUAGES[c])]
        if tess_langs:
            try:
                import tesserocr
            except ImportError:
                raise MissingExtraError("reading Korean needs tesserocr", extra="ocr") from None
            folder = _tessdata()
            missing = [name for name in tess_langs
                       if folder is None or not os.path.isfile(os.path.join(folder, f"{name}.traineddata"))]
            if missing:
                raise ModelError(f"Tesseract's {'+'.join(missing)} language data is not installed: "
                                 f"apt-get install tesseract-ocr-{missing[0]} (or set TESSDATA_PREFIX)")
            self._tess = tesserocr.PyTessBaseAPI(path=folder, lang="+".join([*tess_langs, "eng"]),
                                                 psm=tesserocr.PSM.SINGLE_LINE)

    @property
    def name(self) -> str:
        """What the catalog records as the reader of each line set: engines and languages."""
        det = "-int8" if self.precision == "int8" else ""
        return f"rapidocr-{RAPIDOCR_VERSION}{det}+tesseract:{','.join(self.langs)}"

    def close(self) -> None:
        """Free Tesseract's handle (the ONNX sessions go with the object)."""
        if self._tess is not None:
            self._tess.End()
            self._tess = None

    def read_file(self, path: str | os.PathLike[str]) -> list[OcrLine]:
        """The lines of text in the image file at ``path`` (EXIF orientation applied).

        Raises:
            ImageDecodeError: the file is not a decodable image.
            OSError: it cannot be read.
        """
        from .images import decode_image

        data = Path(path).read_bytes()
        name = os.fspath(path)
        full = self.max_side * 3 // 4
        if self.probe_side > 0:
            # The probe needs only a small copy: JPEG draft mode decodes a 12 MP photo at an eighth
            # of its size straight from the DCT (a tenth of the full decode), so a text-free photo
            # never pays for the large one.
            small = decode_image(data, name, min_side=self.probe_side * 3 // 4)
            if 0 < self.probe_side < max(small.width, small.height) * 0.8:
                with self._lock:
                    if not self._has_text(small.image):
                        return []
                drafted = max(small.image.size) < min(max(small.width, small.height), self.max_side)
                image = decode_image(data, name, min_side=full).image if drafted else small.image
                return self._read(image, probed=True)
        # Draft mode: a 12 MP JPEG decodes at half or a quarter size straight from the DCT.
        return self.read(decode_image(data, name, min_side=full).image)

    def read(self, image: Image.Image) -> list[OcrLine]:
        """The lines of text in ``image``, top to bottom."""
        return self._read(image, probed=False)

    def _read(self, image: Image.Image, *, probed: bool) -> list[OcrLine]:
        """:meth:`read`; ``probed``: the caller's probe already found a text region."""
        img = image.convert("RGB")
        scale = min(1.0, self.max_side / max(img.size))
        if scale < 1.0:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BILINEAR)
        arr = np.ascontiguousarray(np.asarray(img)[:, :, ::-1])  # rapidocr works in BGR, as OpenCV
        h, w = arr.shape[:2]
        with self._lock:  # one image at a time per engine: the sessions and Tesseract are not shared safely
            if not probed and 0 < self.probe_side < max(w, h) * 0.8 and not self._has_text(img):
                return []
            det = self._rapid(arr, use_det=True, use_cls=False, use_rec=False)
            boxes = _line_boxes(getattr(det, "boxes", None), w, h)
            if len(boxes) == 0:
                return []
            crops, turned = [], []
            for quad in np.asarray(boxes, dtype=np.float32):
                crop = _quad_crop(arr, quad)
                tall = crop.shape[0] >= 1.5 * crop.shape[1]
                crops.append(np.ascontiguousarray(np.rot90(crop)) if tall else crop)
                turned.append(tall)
            upright, cls = self._rapid.cls_and_rotate(crops)
            rec = self._rapid.recognize_txt(upright)
            txts, scores = rec.txts or (), rec.scores or ()
            lines = []
            for i, quad in enumerate(np.asarray(boxes, dtype=np.float32)):
                text = unicodedata.normalize("NFC", str(txts[i] or "")).strip()
                conf = float(scores[i] or 0.0)
                flipped = bool(cls.cls_res and cls.cls_res[i][0] == "180")
                engine = "rapidocr"
                if self._tess is not None and (_non_latin(text) or conf < 0.85 or not text):
                    better = self._tesseract(upright[i])
                    if better is None or better[1] < 0.8:
                        # The direction classifier learnt Chinese and Latin: for Hangul it is often wrong.
                        other = self._tesseract(np.ascontiguousarray(upright[i][::-1, ::-1]))
                        if other is not None and (better is None or other[1] > better[1]):
                            better, flipped = other, not flipped
                    if better is not None and self._prefer(better, text, conf):
                        text, conf, engine = better[0], better[1], "tesseract"
                if not text or conf < self.min_confidence or not any(ch.isalnum() for ch in text):
                    continue
                angle = ((90 if turned[i] else 0) + (180 if flipped else 0)) % 360
                corners = tuple(float(v) for x, y in quad for v in (x / w, y / h))
                lines.append(OcrLine(text, round(conf, 4), tuple(round(v, 5) for v in corners), angle, engine))
        lines.sort(key=lambda ln: (round(min(ln.box[1::2]), 2), min(ln.box[0::2])))
        return lines

    def _has_text(self, img: Image.Image) -> bool:
        """Whether the detector finds any text region in a small copy of ``img`` (the cheap probe)."""
        scale = self.probe_side / max(img.size)
        if scale < 1.0:
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BILINEAR)
        small = img
        probe = self._rapid(np.ascontiguousarray(np.asarray(small)[:, :, ::-1]), use_det=True, use_cls=False,
                            use_rec=False)
        return len(_line_boxes(getattr(probe, "boxes", None), small.width, small.height)) > 0

    @staticmethod
    def _prefer(tess: tuple[str, float], text: str, conf: float) -> bool:
        """Whether Tesseract's reading wins over PP-OCR's (``text`` at ``conf``)."""
        t_text, t_conf = tess
        hangul = sum(_is_hangul(ch) for ch in t_text)
        # PP-OCR's recognizer has no Hangul: where Tesseract sees Hangul, PP-OCR's confident
        # Chinese or Latin reading of the same strokes is a misreading, not a rival.
        if hangul and hangul >= 0.3 * sum(ch.isalnum() for ch in t_text) and t_conf >= 0.55:
            return not (conf >= 0.97 and not _non_latin(text))
        return t_conf > conf

    def _tesseract(self, crop_bgr: np.ndarray) -> tuple[str, float] | None:
        """Tesseract's single-line reading of an upright crop: (text, mean word confidence 0..1).

        The crop is read in colour, and when that is unsure (under 0.8) binarised too (Otsu):
        Tesseract misreads dark Hangul on a saturated sign (yellow, red) that it reads in black
        and white.  The more confident reading is kept.
        """
        import cv2

        height = crop_bgr.shape[0]
        if height != 48:
            # Tesseract's line model reads lines about 48 px high: larger Hangul (a line of 80 px)
            # comes out as Latin junk, smaller loses strokes.
            width = max(1, crop_bgr.shape[1] * 48 // max(height, 1))
            crop_bgr = cv2.resize(crop_bgr, (width, 48), interpolation=cv2.INTER_AREA if height > 48 else
                                  cv2.INTER_CUBIC)
        best: tuple[str, float] | None = None
        gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
        _, bw = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        if bw.mean() < 128:  # light text on a dark ground: Tesseract wants dark on light
            bw = 255 - bw
        for variant in (np.ascontiguousarray(crop_bgr[:, :, ::-1]), bw):
            img = Image.fromarray(variant)
            pad = Image.new(img.mode, (img.width + 20, img.height + 20), img.getpixel((0, 0)))
            pad.paste(img, (10, 10))
            self._tess.SetImage(pad)
            text = unicodedata.normalize("NFC", self._tess.GetUTF8Text() or "").strip()
            if text:
                reading = _join_syllables(text), max(0.0, float(self._tess.MeanTextConf())) / 100.0
                if best is None or reading[1] > best[1]:
                    best = reading
            if best is not None and best[1] >= 0.8:
                break
        return best


def _join_syllables(text: str) -> str:
    """Tesseract puts spaces between Hangul syllables of one word when unsure; a lone syllable after
    Hangul is joined back to it, since a space inside a run would break the word for search."""
    joined: list[str] = []
    for word in text.split():
        if joined and len(word) == 1 and _is_hangul(word) and _is_hangul(joined[-1][-1]):
            joined[-1] += word
        else:
            joined.append(word)
    return " ".join(joined)
