"""An int8 text detector for the CPU: PP-OCR's detector quantised once per machine, checked, cached.

Finding the lines of text is most of what reading a photo costs (the detector is a network of
83 convolutions run at 736 pixels).  ONNX Runtime runs convolutions in int8 (``QLinearConv``,
u8 activations by s8 weights) two to three times faster than in fp32 on x86, so the detector
shipped in the ``rapidocr`` wheel is quantised here, statically:

* the graph is converted to opset 13 (per-channel weight scales need it);
* each convolution's weights get one scale per output channel, and each activation one fixed
  range, taken from the detector's own activations on :func:`text_scenes` (photo-like scenes
  with lines of text at many sizes and all four turns, and some with regular clutter and no
  text -- coins, bricks, bars -- which a detector may take for text; a seeded
  generator of this module, not the test images), at the 99.999th percentile so that a rare
  extreme value does not widen the range for every pixel;
* the result is checked against the fp32 detector on other scenes (another seed), at the
  detector's two sizes: of the text regions the fp32 detector finds (connected areas of
  probability over 0.3, the threshold its post-processing uses), the int8 one must find
  :data:`DET_INT8_MIN_KEPT`.  A detector that misses more is recorded as rejected and the fp32
  one is used, and the next run does not try again.

The file and a sidecar of facts (the check's figure, the fonts the scenes were drawn with) live
in the ``ocr`` folder of the shared cache, keyed by the source model's SHA-256, the ONNX and ONNX
Runtime versions, the CPU's int8 kind and the recipe's format; preparing it takes about 20 s on two
cores, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..defaults import DEFAULT_CPU_PRECISION
from .cache import cache_root, package_version, write_atomic

__all__ = ["DET_INT8_MIN_KEPT", "DET_PRECISIONS", "default_det_precision", "int8_detector", "int8_detector_state",
           "lines_kept", "shipped_detector", "text_scenes"]

log = logging.getLogger(__name__)

#: Bump when the recipe changes (scenes, calibration, check): files prepared before are then ignored.
_FORMAT = 2  # 2: textured scenes without text in the calibration
#: The check's threshold: the share of the fp32 detector's text regions in the check scenes that the
#: int8 one finds too.
DET_INT8_MIN_KEPT = 0.95
_MIN_REGION = 50  # pixels: smaller specks (a dot, a dash) are not lines
#: The detector's text threshold (rapidocr's ``Det.thresh``): a pixel with a higher probability is text.
_TEXT_THRESHOLD = 0.3
_CALIBRATION = (2611, 8)  # (seed, scenes)
_CHECK = (4093, 16)
DET_PRECISIONS = ("auto", "int8", "fp32")

_LATIN_WORDS = ("OPEN", "Sale", "exit", "Menu", "price", "TOTAL", "street", "North", "hotel", "Cafe", "tickets",
                "Platform", "arrivals", "No parking", "fresh bread", "12:45", "2026", "$ 4.50", "Room 301", "pull",
                "push", "Welcome", "closed on Mondays", "Gate B7", "tel. 555-0134", "receipt", "qty", "VAT 10%")
_HANGUL_WORDS = ("영업중", "출입구", "주차금지", "어서오세요", "할인", "화장실", "매표소", "안내", "비상구", "합계",
                 "정류장", "신선한 빵", "닫힘", "당기세요", "미세요")

# Fonts the scenes are drawn with, where the system has them (Debian, Fedora, macOS, Windows); Pillow's
# own font otherwise.  Which ones were used is recorded with the prepared detector.
_DEJAVU, _NANUM = "/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/nanum"
_LATIN_FONTS = (f"{_DEJAVU}/DejaVuSans.ttf", f"{_DEJAVU}/DejaVuSerif.ttf", f"{_DEJAVU}/DejaVuSans-Bold.ttf",
                "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf", "/System/Library/Fonts/Supplemental/Arial.ttf",
                "C:/Windows/Fonts/arial.ttf")
_HANGUL_FONTS = (f"{_NANUM}/NanumGothic.ttf", f"{_NANUM}/NanumMyeongjo.ttf",
                 "/System/Library/Fonts/AppleSDGothicNeo.ttc", "C:/Windows/Fonts/malgun.ttf")


def default_det_precision() -> str:
    """What ``auto`` means: :data:`searchindex.defaults.DEFAULT_CPU_PRECISION` (int8 on x86, else fp32),
    as for the CLIP image towers."""
    return DEFAULT_CPU_PRECISION


def shipped_detector() -> Path | None:
    """The fp32 detector in the installed ``rapidocr`` wheel (None: not installed, or not one det model)."""
    try:
        import rapidocr
    except ImportError:
        return None
    found = sorted((Path(rapidocr.__file__).parent / "models").glob("*_det_*.onnx"))
    return found[0] if len(found) == 1 else None


def _fonts() -> tuple[list[str], list[str]]:
    return [f for f in _LATIN_FONTS if os.path.isfile(f)], [f for f in _HANGUL_FONTS if os.path.isfile(f)]


def _font(path: str | None, px: int) -> Any:
    from PIL import ImageFont

    if path is not None:
        return ImageFont.truetype(path, px)
    try:
        return ImageFont.load_default(px)  # Pillow 10.1 and later: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _texture(draw: Any, rng: np.random.Generator, w: int, h: int) -> None:
    """Regular clutter with no text in it, for the scenes without text: a heap of rimmed discs (coins,
    pebbles), a wall of bricks, or a fence of thin bars -- the patterns a detector may take for text."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        for _ in range(int(rng.integers(40, 120))):
            x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(8, 40))
            grey = int(rng.integers(60, 230))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(grey, grey, grey - 20),
                         outline=(grey // 3,) * 3, width=max(1, r // 8))
    elif kind == 1:
        bw, bh = int(rng.integers(30, 90)), int(rng.integers(12, 30))
        for row, y in enumerate(range(0, h, bh)):
            for x in range(-(bw // 2) * (row % 2), w, bw):
                red = int(rng.integers(120, 200))
                draw.rectangle((x, y, x + bw - 3, y + bh - 3), fill=(red, red // 2, red // 3))
    else:
        gap = int(rng.integers(6, 24))
        for x in range(0, w, gap):
            draw.line((x, 0, x + int(rng.integers(-20, 20)), h), fill=(40, 40, 40), width=max(1, gap // 4))


def text_scenes(seed: int, count: int, size: tuple[int, int] = (736, 552),
                written: list[list[str]] | None = None) -> list[np.ndarray]:
    """``count`` seeded photo-like scenes (BGR ``uint8``), three in four with a few panels of text and
    the fourth with regular clutter (:func:`_texture`) instead.

    Each scene: a smooth colour field with a few shapes and sensor grain; on it one to four
    panels (sign, paper or screen colours) of Latin or, where a Hangul font exists, Korean text,
    lines from 10 to 64 pixels high, some panels turned a quarter or half turn.  ``written``, when
    given, receives each scene's lines of text.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    latin, hangul = _fonts()
    w, h = size
    out = []
    for n in range(count):
        shown: list[str] = []
        low = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
        img = low.resize((w, h), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(w // 20, w // 4))
            box = (x - r, y - r // 2, x + r, y + r // 2)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        if n % 4 == 3:
            _texture(draw, np.random.default_rng((seed, n)), w, h)
        for _ in range(int(rng.integers(1, 5)) if n % 4 != 3 else 0):
            korean = bool(hangul) and rng.random() < 0.4
            words = _HANGUL_WORDS if korean else _LATIN_WORDS
            fonts = hangul if korean else latin
            px = int(rng.integers(10, 65))
            font = _font(fonts[int(rng.integers(0, len(fonts)))] if fonts else None, px)
            lines = [" ".join(str(words[int(i)]) for i in rng.integers(0, len(words), int(rng.integers(1, 4))))
                     for _ in range(int(rng.integers(1, 4)))]
            dark = rng.random() < 0.3
            paper = tuple(int(c) for c in (rng.integers(0, 70, 3) if dark else rng.integers(170, 256, 3)))
            ink = tuple(int(c) for c in (rng.integers(190, 256, 3) if dark else rng.integers(0, 80, 3)))
            widths = [int(draw.textlength(line, font=font)) for line in lines]
            panel = Image.new("RGB", (max(widths) + px, int(px * 1.4) * len(lines) + px // 2), paper)
            pdraw = ImageDraw.Draw(panel)
            for i, line in enumerate(lines):
                pdraw.text((px // 2, px // 4 + i * int(px * 1.4)), line, font=font, fill=ink)
            panel = panel.rotate(int(rng.choice([0, 0, 0, 90, 180, 270])), expand=True)
            if panel.width < w and panel.height < h:
                img.paste(panel, (int(rng.integers(0, w - panel.width)), int(rng.integers(0, h - panel.height))))
                shown += lines
        grain = rng.normal(0, 5, (h, w, 3))
        arr = np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(arr[:, :, ::-1]))
        if written is not None:
            written.append(shown)
    return out


def lines_kept(want: list[np.ndarray], got: list[np.ndarray], threshold: float = _TEXT_THRESHOLD) -> float:
    """Of the text regions in the probability maps ``want`` (connected areas over ``threshold``: a line
    or a word each), the fraction that ``got`` finds too (covers at least half of it); 1.0 when none."""
    import cv2

    kept = total = 0
    for a, b in zip(want, got, strict=True):
        count, labels = cv2.connectedComponents((a.reshape(a.shape[-2:]) > threshold).astype(np.uint8))
        other = b.reshape(b.shape[-2:]) > threshold
        for k in range(1, count):
            region = labels == k
            if np.count_nonzero(region) >= _MIN_REGION:
                total += 1
                kept += bool(other[region].mean() >= 0.5)
    return kept / total if total else 1.0


def _ident(source: Path) -> dict[str, Any]:
    from .int8 import int8_weight_levels

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return {"format": _FORMAT, "source_sha256": digest, "onnxruntime": package_version("onnxruntime"),
            "onnx": package_version("onnx"), "weight_levels": int8_weight_levels()}


def _paths(ident: dict[str, Any]) -> tuple[Path, Path]:
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    stem = cache_root() / "ocr" / f"det-{key}-int8"
    return stem.with_suffix(".onnx"), stem.with_suffix(".json")


def _inputs(scenes: list[np.ndarray], sides: tuple[int, ...]) -> list[np.ndarray]:
    """The detector's inputs for ``scenes`` scaled to each long side (rapidocr's own preprocessing)."""
    import cv2
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    out = []
    for side in sides:
        pre = DetPreProcess(side, "max", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
        for scene in scenes:
            scale = side / max(scene.shape[:2])
            if scale < 1.0:
                scene = cv2.resize(scene, (round(scene.shape[1] * scale), round(scene.shape[0] * scale)),
                                   interpolation=cv2.INTER_AREA)
            x = pre(scene)
            if x is not None:
                out.append(x)
    return out


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantiser prints its progress and logs advice on the root logger: neither is
    for a user of this library, so both are kept out while it runs."""
    def drop(record: logging.LogRecord) -> bool:
        return f"onnxruntime{os.sep}quantization" not in record.pathname

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(drop)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _recorded(ident: dict[str, Any], min_kept: float) -> tuple[str, tuple[Path, dict[str, Any]] | None]:
    """(state, prepared): ``ready`` with (file, facts), ``rejected``, or ``missing`` (not prepared yet)."""
    model_file, sidecar = _paths(ident)
    try:
        facts = json.loads(sidecar.read_text())
        if facts.get("ident") == ident:
            if float(facts["lines_kept"]) < min_kept:
                return "rejected", None  # this machine's int8 detector misses text: the verdict stands
            if facts.get("accepted") and model_file.is_file() and model_file.stat().st_size == facts.get("bytes"):
                return "ready", (model_file, facts)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "missing", None


def int8_detector_state(source: Path | None = None) -> str:
    """``ready`` (prepared on this machine), ``rejected`` (its check failed: fp32 is used) or ``missing``
    (the first reading will prepare it, some seconds); ``missing`` too when rapidocr is not installed."""
    source = source or shipped_detector()
    return _recorded(_ident(source), DET_INT8_MIN_KEPT)[0] if source is not None else "missing"


def int8_detector(source: Path, *, sides: tuple[int, ...] = (736, 352), threads: int = 2,
                  min_kept: float | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The int8 version of the fp32 detector ``source`` and its facts, prepared now if this machine has
    none yet; None when it was rejected (it finds less than ``min_kept``, by default
    :data:`DET_INT8_MIN_KEPT`, of the text regions the fp32 one finds in the check scenes), here
    or by an earlier run, or cannot be made with the installed ONNX tools (logged).

    ``sides``: the detector's input sizes (the reading and probe sides): calibrated at the first, checked
    at each.
    """
    min_kept = DET_INT8_MIN_KEPT if min_kept is None else min_kept
    ident = _ident(source)
    state, prepared = _recorded(ident, min_kept)
    if state != "missing":
        return prepared
    model_file, sidecar = _paths(ident)
    try:
        return _prepare(source, ident, model_file, sidecar, sides, threads, min_kept)
    except Exception as exc:  # noqa: BLE001 - an int8 detector is a speed-up: fp32 still reads
        log.warning("cannot prepare the int8 text detector (%s: %s); reading with the fp32 one",
                    type(exc).__name__, exc)
        return None


def _prepare(source: Path, ident: dict[str, Any], model_file: Path, sidecar: Path, sides: tuple[int, ...],
             threads: int, min_kept: float) -> tuple[Path, dict[str, Any]] | None:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    t0 = time.perf_counter()
    model_file.parent.mkdir(parents=True, exist_ok=True)  # an unwritable cache fails here, before any work
    # One input size for the calibration (its histograms are of one shape); the ranges serve both sides,
    # and the check below runs at each.
    calibration = _inputs(text_scenes(*_CALIBRATION), sides[:1])
    name = _session(source, 1).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """The scenes one at a time: with ``CalibStridedMinMax`` at 1 the calibrator adds each scene's
        activations to its histograms and drops them (all at once, the detector's activations for 8
        scenes took 3 GB)."""

        def __init__(self) -> None:
            self._feeds = iter(calibration)

        def __len__(self) -> int:
            return len(calibration)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._feeds = iter(calibration[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._feeds, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory(dir=model_file.parent, prefix=".det-int8-") as tmp:
        upgraded, staged = Path(tmp) / "det-opset13.onnx", Path(tmp) / model_file.name
        onnx.save(version_converter.convert_version(onnx.load(str(source)), 13), str(upgraded))
        with _quiet_quantizer():
            quantize_static(str(upgraded), str(staged), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=ident["weight_levels"] != 127, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibStridedMinMax": 1})
        check = _inputs(text_scenes(*_CHECK), sides)
        fp32, int8 = _session(source, threads), _session(staged, threads)
        want = [fp32.run(None, {name: x})[0] for x in check]
        got = [int8.run(None, {name: x})[0] for x in check]
        del fp32, int8
        kept, extra = lines_kept(want, got), 1.0 - lines_kept(got, want)
        latin, hangul = _fonts()
        facts = {"ident": ident, "source": source.name, "accepted": kept >= min_kept, "lines_kept": round(kept, 4),
                 "extra_regions": round(extra, 4),
                 "min_kept": min_kept, "sides": list(sides), "fonts": [os.path.basename(f) for f in latin + hangul]
                 or ["Pillow's default"], "seconds": round(time.perf_counter() - t0, 1)}
        if facts["accepted"]:
            os.chmod(staged, 0o644)
            facts["bytes"] = staged.stat().st_size
            os.replace(staged, model_file)
        write_atomic(sidecar, lambda t: Path(t).write_text(json.dumps(facts, indent=1)))
    if not facts["accepted"]:
        log.warning("the int8 text detector misses text the fp32 one finds (it finds %.1f %% of its regions, "
                    "under %.0f %%): reading with the fp32 one", 100 * kept, 100 * min_kept)
        return None
    log.info("prepared the int8 text detector in %.1f s (it finds %.1f %% of the fp32 one's text regions): %s",
             facts["seconds"], 100 * kept, model_file)
    return model_file, facts
