"""The prepared int8 image tower: built once per model and machine, then loaded without torch.

The image tower is exported to ONNX (:mod:`searchindex.models.onnx`), its matrix
multiplies rewritten to per-token int8 (:mod:`searchindex.models.quantize`), and
checked against torch fp32 on probe scenes; :class:`PreparedEncoder` runs it under
ONNX Runtime with NumPy/Pillow preprocessing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from .cache import package_version, tower_key, write_atomic
from .encoders import Encoder, OpenClipEncoder, as_array, run_image_session
from .onnx import export_graph, image_tower_session, load_text_encoder, model_cache_dir, onnx_available
from .pixels import PixelSpec
from .spec import ModelSpec

__all__ = ["PreparedEncoder", "int8_verdict", "int8_weight_levels", "load_int8_tower", "prepare_int8_tower",
           "prepared_pixel_spec", "probe_pixels"]

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


# --- the prepared int8 image tower -------------------------------------------------------------
#
# Built once per model and machine by a process that has the open_clip model loaded (the
# first int8 indexing run): the image tower is exported to ONNX, its matrix multiplies are
# rewritten to per-token int8 (searchindex.quantize), and the result is checked against
# torch fp32 on probe scenes.  Later runs load only this file into ONNX Runtime: no torch,
# no open_clip, no model construction, no self-check.  The sidecar records what made it;
# a different ONNX Runtime, onnx, torch or open_clip version, another CPU kind or a new
# format makes it stale, and it is built again.

_INT8_FORMAT = 2  # 2: photo-like probes
_INT8_PROBES = 16


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_weight_levels() -> int:
    """127 where the CPU has VNNI (u8 x s8 dot products accumulate in 32 bits), else 63.

    Without VNNI, x86 int8 kernels add pairs of u8 x s8 products in 16 bits, which
    saturates with full-range weights; 7-bit weights keep every pair sum in range.
    """
    flags = _cpu_flags()
    return 127 if flags & {"avx512_vnni", "avx_vnni", "avx512vnni"} else 63


def _int8_ident(source: str = "torch") -> dict[str, Any]:
    """What a prepared tower depends on.  One quantised from a graph built without torch (``built``,
    ``shipped``) does not depend on the torch and open_clip versions; one exported by torch does."""
    ident: dict[str, Any] = {"format": _INT8_FORMAT, "onnxruntime": package_version("onnxruntime"),
                             "onnx": package_version("onnx"), "weight_levels": int8_weight_levels()}
    if source == "torch":
        ident.update(torch=package_version("torch"), open_clip=package_version("open_clip_torch"))
    else:
        ident["source"] = source
    return ident


def _current(facts: dict[str, Any]) -> bool:
    """Whether a sidecar was written by the installed versions on this kind of CPU."""
    return bool(facts.get("ident") == _int8_ident(str(facts.get("source", "torch"))))


def _int8_paths(spec: ModelSpec) -> tuple[Path, Path]:
    stem = model_cache_dir() / f"{tower_key(spec)}-image-int8"
    return stem.with_suffix(".onnx"), stem.with_suffix(".json")


def probe_pixels(pixel_spec: PixelSpec, count: int = _INT8_PROBES) -> np.ndarray:
    """Seeded photo-like probes at the model's input size (smooth colour fields, edges, grain):
    what the int8 tower is checked on."""
    from PIL import Image, ImageDraw

    from .pixels import to_pixels

    rng = np.random.default_rng(2026)
    side = max(pixel_spec.height, pixel_spec.width)
    images = []
    for _ in range(count):
        low = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        img = low.resize((side, side), Image.Resampling.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x, y, r = (int(v) for v in rng.integers(0, side, 3) // (1, 1, 3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (side, side, 1))
        images.append(to_pixels(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), pixel_spec))
    return pixel_spec.normalise(images)


def load_int8_tower(spec: ModelSpec) -> tuple[Path, dict[str, Any]] | None:
    """The file of the int8 image tower prepared for ``spec`` and its facts, or None (none yet,
    stale, rejected, or not the size it was written at).  Nothing is loaded: the session is
    made when :class:`PreparedEncoder` first needs it."""
    if not onnx_available():
        return None
    model_file, sidecar = _int8_paths(spec)
    try:
        facts = json.loads(sidecar.read_text())
        if not _current(facts) or not facts.get("accepted"):
            return None
        if model_file.stat().st_size != facts.get("bytes", model_file.stat().st_size):
            log.debug("the prepared int8 tower %s is not the size it was written at", model_file)
            return None
        return model_file, facts
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged file must never stop indexing: it is built again
        log.debug("cannot use the prepared int8 tower %s: %s", model_file, exc)
        return None


def prepared_pixel_spec(spec: ModelSpec) -> PixelSpec | None:
    """The input ``spec``'s model wants, as recorded with its int8 tower prepared on this machine by
    the installed versions; None when there is none (no model is loaded to find out)."""
    try:
        facts = json.loads(_int8_paths(spec)[1].read_text())
        if not _current(facts) or "pixel_spec" not in facts:
            return None
        return PixelSpec.from_json(facts["pixel_spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def int8_verdict(spec: ModelSpec) -> float | None:
    """The recorded int8-vs-fp32 cosine of ``spec`` on this machine when int8 was rejected, else None."""
    try:
        facts = json.loads(_int8_paths(spec)[1].read_text())
    except (OSError, ValueError):
        return None
    if _current(facts) and not facts.get("accepted") and "cosine" in facts:
        return float(facts["cosine"])
    return None


def prepare_int8_tower(encoder: OpenClipEncoder, min_cosine: float) -> tuple[Any, float] | None:
    """Build (or load) ``encoder``'s prepared int8 image tower; the session and its checked cosine.

    None when onnx/onnxruntime are missing, the model needs open_clip's own preprocessing,
    the export fails, or the int8 vectors drift from fp32 below ``min_cosine`` (recorded,
    so later runs do not try again).
    """
    import torch

    if not onnx_available(export=True) or encoder.pixel_spec is None:
        return None
    loaded = load_int8_tower(encoder.spec)
    if loaded is not None:
        try:
            return image_tower_session(loaded[0], spin=False), float(loaded[1]["cosine"])
        except Exception as exc:  # damaged since: built again below
            log.debug("cannot load the prepared int8 tower %s: %s", loaded[0], exc)
    if int8_verdict(encoder.spec) is not None:
        return None
    probes = probe_pixels(encoder.pixel_spec)
    model = encoder.torch_model

    def reference(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(model.visual(torch.from_numpy(pixels)).float().numpy())

    def export(fp32: Path) -> None:
        export_graph(encoder, model.visual, probes[:2], "pixels", fp32)

    facts = {"dim": encoder.dim, "image_size": encoder.image_size, "pixel_spec": encoder.pixel_spec.to_json()}
    made = _quantise_checked(encoder.spec, export, reference, probes, facts, "torch", min_cosine)
    return (image_tower_session(made[0], spin=False), float(made[1]["cosine"])) if made else None


def prepare_int8_from_graph(spec: ModelSpec, fp32_file: Path, pixel_spec: PixelSpec, dim: int, image_size: int,
                            source: str, min_cosine: float) -> tuple[Path, dict[str, Any]] | None:
    """The int8 tower of ``spec`` quantised from an fp32 ONNX graph made without torch (``source``:
    ``built`` or ``shipped``) and checked against that graph under ONNX Runtime; (file, facts), or None
    when its vectors drift below ``min_cosine`` (recorded, so later runs do not try again)."""
    loaded = load_int8_tower(spec)
    if loaded is not None and loaded[1].get("source", "torch") == source:
        return loaded
    if (facts_now := _sidecar(spec)) is not None and _current(facts_now) and not facts_now.get("accepted") \
            and facts_now.get("source") == source:
        return None
    probes = probe_pixels(pixel_spec)
    fp32_session = image_tower_session(fp32_file, spin=False)

    def reference(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(fp32_session.run(None, {"pixels": pixels})[0], dtype=np.float32)

    def export(fp32: Path) -> None:
        import shutil

        shutil.copyfile(fp32_file, fp32)
        data = fp32_file.with_name(fp32_file.name + ".data")
        if data.is_file():
            shutil.copyfile(data, fp32.with_name(fp32_file.name + ".data"))

    facts = {"dim": dim, "image_size": image_size, "pixel_spec": pixel_spec.to_json()}
    return _quantise_checked(spec, export, reference, probes, facts, source, min_cosine, name=fp32_file.name)


def _sidecar(spec: ModelSpec) -> dict[str, Any] | None:
    try:
        facts = json.loads(_int8_paths(spec)[1].read_text())
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) else None


def _quantise_checked(spec: ModelSpec, export: Any, reference: Any, probes: np.ndarray, facts: dict[str, Any],
                      source: str, min_cosine: float,
                      name: str = "image-fp32.onnx") -> tuple[Path, dict[str, Any]] | None:
    """Write ``spec``'s fp32 image graph (``export(path)``), quantise it, compare it with ``reference`` on
    ``probes`` and keep it when the mean cosine reaches ``min_cosine``; (file, facts) or None."""
    from .quantize import quantize_onnx_file

    model_file, sidecar = _int8_paths(spec)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_file.parent, prefix=".int8-") as tmp:
        fp32 = Path(tmp) / name
        export(fp32)
        staged = Path(tmp) / model_file.name
        converted = quantize_onnx_file(fp32, staged, weight_levels=int8_weight_levels())
        session = image_tower_session(staged, spin=False)
        want = reference(probes)
        got = session.run(None, {"pixels": probes})[0]
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        cosine = float(np.mean(np.sum(got * want, axis=1)))
        accepted = cosine >= min_cosine
        record = {"ident": _int8_ident(source), "source": source, "model": spec.describe(), "accepted": accepted,
                  "cosine": cosine, "converted": converted, **facts}
        del session
        if accepted:
            os.chmod(staged, 0o644)
            record["bytes"] = staged.stat().st_size
            os.replace(staged, model_file)
        write_atomic(sidecar, lambda t: Path(t).write_text(json.dumps(record, indent=1)))
    if not accepted:
        return None
    log.info("prepared the int8 %s image tower (%d matrix multiplies, cosine %.4f against fp32, from a %s graph) "
             "in %s", spec.describe(), converted, cosine, source, model_file)
    return model_file, record


class PreparedEncoder(Encoder):
    """An ONNX image tower under ONNX Runtime: the int8 tower prepared earlier for this model and machine,
    or (``precision`` ``fp32``) a built or shipped fp32 graph, on ``providers`` (default: the CPU).

    Needs neither torch nor open_clip: preprocessing is :class:`PixelSpec` (Pillow and
    NumPy), the tower an ONNX Runtime session of a ~90 MB file (ViT-B-32), made by
    :meth:`load` or on the first image encoded, so that a caller can overlap it with
    decoding (and fork decode workers before it exists).  Texts go to the exported ONNX
    text tower, or -- only if there is none -- to the full model, loaded on first use.
    """

    precision = "int8"

    def __init__(self, spec: ModelSpec, model_file: Path, facts: dict[str, Any], precision: str = "int8",
                 providers: Sequence[str] = ()) -> None:
        self.spec = spec
        self.precision = precision
        self._providers = tuple(providers)
        self.device = "cpu"
        self.dim = int(facts["dim"])
        self.image_size = int(facts["image_size"])
        self.pixel_spec = PixelSpec.from_json(facts["pixel_spec"])
        self._model_file = model_file
        self._session: Any = None
        self._loading = threading.Lock()
        self._text: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the image tower's session exists yet."""
        return self._session is not None

    def load(self) -> None:
        """Make the image tower's session now.

        Raises:
            ModelError: the prepared file cannot be loaded (damaged since it was checked);
                its record is removed, so the next run prepares it again.
        """
        with self._loading:
            if self._session is not None:
                return
            try:
                self._session = image_tower_session(self._model_file, spin=False, providers=self._providers)
            except Exception as exc:
                if self.precision == "int8":
                    _int8_paths(self.spec)[1].unlink(missing_ok=True)
                raise ModelError(
                    f"the prepared int8 image tower {self._model_file} cannot be loaded ({exc}); "
                    "it is prepared again on the next run"
                ) from exc

    def _tower(self) -> Any:
        if self._session is None:
            self.load()
        return self._session

    def preprocess(self, image: Image.Image) -> Any:
        from .pixels import to_pixels

        assert self.pixel_spec is not None
        return self.pixel_spec.normalise([to_pixels(image.convert("RGB"), self.pixel_spec)])[0]

    def encode_batch(self, batch: Sequence[Any]) -> np.ndarray:
        return run_image_session(self._tower(), as_array(batch))

    def encode_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        assert self.pixel_spec is not None
        return run_image_session(self._tower(), self.pixel_spec.normalise(pixels))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._text is None:
            from .towers import text_encoder

            self._text = text_encoder(self.spec) or load_text_encoder(self.spec) \
                or OpenClipEncoder(self.spec, "cpu", "fp32")
        return np.asarray(self._text.encode_texts(texts), dtype=np.float32)
