"""Image/text encoders.  open_clip and torch are imported only when a model loads."""

from __future__ import annotations

import logging
import os
import platform
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..defaults import PRECISIONS
from ..errors import ModelError, WeightsUnavailableError
from .pixels import PixelSpec
from .spec import (
    CHECKPOINT_NAME,
    DEFAULT_MODEL,
    DEFAULT_PRETRAINED,
    ModelSpec,
    builtin_models,
    resolve_model,
    sha256_file,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PRETRAINED",
    "Encoder",
    "ModelSpec",
    "OpenClipEncoder",
    "resolve_model",
]

log = logging.getLogger(__name__)

def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when a GPU is visible, else CPU."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"



# What `auto` means on a CPU, chosen with scripts/bench_index.py (figures in the
# README's performance section): int8 -- every linear layer of the image tower,
# attention projections included, with per-channel int8 weights and per-token int8
# activations (searchindex.models.quantize).  On the 2-core AVX2 machine it encodes ViT-B-32
# ~1.5x faster than fp32 and meets the quality guard (cosine >= 0.9997 against the fp32
# reference on ViT-B-32 and tiny-shapes); per-token ranges keep an image's vector
# independent of its batch mates (to float rounding, as in fp32).  ONNX Runtime fp32
# (--precision onnx) was no faster than torch fp32 with the cores to itself; bf16 is
# slow on CPUs without native bf16 instructions.  Because int8 has only been measured on
# the models we can run here, every int8 encoder first checks itself against fp32 on
# the first images it sees (INT8_MIN_COSINE) and falls back to fp32 if it falls short;
# the measured cosine is kept in the shared cache (``int8/``), so that check is paid
# once per model and machine, like the ONNX exports.
# Measured on x86 only; elsewhere (e.g. ARM, where fp32 runs on other kernels) auto keeps fp32.
DEFAULT_CPU_PRECISION = "int8" if platform.machine().lower() in ("x86_64", "amd64") else "fp32"
INT8_MIN_COSINE = 0.99  # the quality guard's threshold, per image batch
_INT8_PROBE_IMAGES = 8


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` is fp16 on CUDA and :data:`DEFAULT_CPU_PRECISION` on a CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    cuda = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if cuda else DEFAULT_CPU_PRECISION
    if precision == "fp16" and not cuda:
        raise ModelError("fp16 needs a CUDA device; on a CPU use fp32, bf16 or int8")
    if precision == "int8" and cuda:
        raise ModelError("int8 runs on the CPU only; on CUDA use fp16")
    if precision == "onnx" and cuda:
        raise ModelError("onnx (ONNX Runtime) runs on the CPU only here; on CUDA use fp16")
    return precision


class Encoder(ABC):
    """Maps images and texts into one normalised vector space.

    Subclasses set ``spec``, ``dim``, ``image_size`` and ``pixel_spec`` and implement
    the ``encode_*`` methods; everything else in searchindex speaks to this interface.
    """

    spec: ModelSpec
    dim: int
    image_size: int  # the side the model sees; decoders may reduce images down to it
    # When set, decode workers may produce the model's pixels themselves (see searchindex.models.pixels).
    pixel_spec: PixelSpec | None = None
    precision: str = "fp32"

    @abstractmethod
    def preprocess(self, image: Image.Image) -> Any:
        """Turn one RGB image into the model's input tensor (safe to call from threads)."""

    @abstractmethod
    def encode_batch(self, batch: Sequence[Any]) -> np.ndarray:
        """Encode preprocessed images: (n, dim) float32, L2-normalised."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts: (n, dim) float32, L2-normalised."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and encode RGB images."""
        return self.encode_batch([self.preprocess(im) for im in images])

    def encode_pixels(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Encode ``uint8`` HWC arrays made by :func:`searchindex.models.pixels.to_pixels` with ``pixel_spec``."""
        if self.pixel_spec is None:
            raise ModelError(f"{self.spec.describe()} needs its own preprocessing")
        return self.encode_batch(list(self.pixel_spec.normalise(pixels)))


class OpenClipEncoder(Encoder):
    """Any open_clip model: built-in, pretrained tag, hub id, or local checkpoint."""

    _TEXT_CACHE_SIZE = 256

    def __init__(self, spec: ModelSpec, device: str = "auto", precision: str = "auto") -> None:
        import open_clip
        import torch

        self.spec = spec
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        builtins = builtin_models()
        if spec.model in builtins:
            name, pretrained = f"local-dir:{builtins[spec.model]}", None
            if spec.pretrained == "none":
                load = False
            else:
                load = True
                actual = sha256_file(builtins[spec.model] / CHECKPOINT_NAME)
                if spec.checkpoint_sha256 and actual != spec.checkpoint_sha256:
                    raise WeightsUnavailableError(
                        f"the shipped {spec.model} weights changed since this index was built "
                        f"(sha256 {actual[:12]} != {spec.checkpoint_sha256[:12]}); rebuild the index"
                    )
        elif spec.pretrained in ("hf-hub", "local-dir"):
            name, pretrained, load = spec.model, None, True
        else:
            name, load = spec.model, spec.pretrained != "none"
            pretrained = spec.pretrained if load else None
            if spec.checkpoint_sha256 and not Path(spec.pretrained).is_file():
                raise WeightsUnavailableError(
                    f"checkpoint file {spec.pretrained} recorded with this index no longer exists"
                )
        if not load:
            log.warning("%s: no pretrained weights (random init); search results will be meaningless", spec.model)
        try:
            # Random weights are seeded, so an index built with them gets the same
            # model back when it is reopened (without touching the caller's RNG).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pretrained, device=self.device, load_weights=load
                )
        except RuntimeError as exc:
            text = str(exc)
            if "download" in text.lower() or "hf hub" in text.lower() or "connect" in text.lower():
                raise WeightsUnavailableError(
                    f"could not download the weights for {spec.describe()}: {text}. "
                    "On a machine without internet access, download the checkpoint elsewhere "
                    "and pass the file: --pretrained /path/to/open_clip_model.safetensors"
                ) from exc
            raise ModelError(f"could not load {spec.describe()}: {text}") from exc
        except (OSError, ValueError, KeyError, AssertionError) as exc:  # open_clip asserts on shape mismatches
            raise ModelError(f"could not load {spec.describe()}: {exc}") from exc
        model.eval()
        self._torch = torch
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(name)
        self.image_size = int(model.visual.preprocess_cfg["size"]
                              if isinstance(model.visual.preprocess_cfg["size"], int)
                              else min(model.visual.preprocess_cfg["size"]))
        self.pixel_spec = PixelSpec.from_open_clip(model.visual.preprocess_cfg)
        with torch.inference_mode():
            probe = self._tokenizer(["a"]).to(self.device)
            self.dim = int(model.encode_text(probe).shape[-1])
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._visual = model.visual
        self._int8_unchecked = False
        if self.precision == "int8":
            checked = self._int8_record(None)
            if checked is not None and checked < INT8_MIN_COSINE:
                self._int8_rejected(checked, "an earlier check")
            else:
                from .quantize import quantize_image_tower

                try:
                    self._visual, _ = quantize_image_tower(model.visual)
                    self._int8_unchecked = checked is None
                except (RuntimeError, NotImplementedError) as exc:  # no int8 kernels in this torch build
                    log.warning("%s: int8 is not available here (%s); encoding in fp32", spec.describe(), exc)
                    self.precision = "fp32"
        self._onnx_visual: Any = None  # an ONNX Runtime image tower, attached by the onnx backend

    def attach_image_runtime(self, session: Any) -> None:
        """Encode images with ``session`` (an ONNX Runtime session of this model's image tower: input
        ``pixels``, output unnormalised features) instead of torch; see :mod:`searchindex.models.backends`."""
        self._onnx_visual = session

    @property
    def torch_model(self) -> Any:
        """The loaded open_clip model (fp32 weights), for exporters such as :mod:`searchindex.models.onnx`."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this model."""
        return self._tokenizer

    def preprocess(self, image: Image.Image) -> Any:
        return self._preprocess(image)

    def encode_batch(self, batch: Sequence[Any]) -> np.ndarray:
        torch = self._torch
        if self._onnx_visual is not None:
            x = torch.stack(list(batch)).numpy()
            feats = self._onnx_visual.run(None, {"pixels": x})[0].astype(np.float32)
            return np.asarray(feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12))
        with torch.inference_mode():
            x = torch.stack(list(batch)).to(self.device)
            if self.precision in ("bf16", "fp16"):
                kind = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(device_type=x.device.type, dtype=kind):
                    feats = self._visual(x)
            else:
                feats = self._visual(x)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            if self._int8_unchecked:
                feats = self._check_int8(x, feats)
        return np.asarray(feats.cpu().numpy())

    def _check_int8(self, x: Any, feats: Any) -> Any:
        """Compare the first int8 batch with fp32; fall back to fp32 for good if it drifts."""
        torch = self._torch
        self._int8_unchecked = False
        n = min(len(x), _INT8_PROBE_IMAGES)
        reference = torch.nn.functional.normalize(self._model.visual(x[:n]).float(), dim=-1)
        cosine = float((reference * feats[:n]).sum(dim=-1).mean())
        self._int8_record(cosine)
        if cosine >= INT8_MIN_COSINE:
            return feats
        self._int8_rejected(cosine, f"a check on {n} images")
        return torch.nn.functional.normalize(self._visual(x).float(), dim=-1)

    def _int8_rejected(self, cosine: float, where: str) -> None:
        log.warning("%s: int8 image vectors drift from fp32 (mean cosine %.4f < %.2f in %s); "
                    "encoding in fp32 instead", self.spec.describe(), cosine, INT8_MIN_COSINE, where)
        self._visual, self.precision = self._model.visual, "fp32"

    def _int8_record(self, cosine: float | None) -> float | None:
        """Read (``cosine`` None) or write the int8-vs-fp32 cosine kept for this model.

        Best effort: a cache that cannot be read or written only means checking again.
        """
        import json

        from .cache import cache_root, tower_key

        torch = self._torch
        ident = {"torch": torch.__version__, "engine": torch.backends.quantized.engine, "format": 1}
        try:
            path = cache_root() / "int8" / f"{tower_key(self.spec)}.json"
            if cosine is None:
                record = json.loads(path.read_text())
                return float(record["cosine"]) if record.get("ident") == ident else None
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"ident": ident, "cosine": cosine}))
            os.replace(tmp, path)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cosine

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            torch = self._torch
            with torch.inference_mode():
                tokens = self._tokenizer(missing).to(self.device)
                feats = self._model.encode_text(tokens, normalize=True).float().cpu().numpy()
            for t, f in zip(missing, feats, strict=False):
                self._text_cache[t] = f
                while len(self._text_cache) > self._TEXT_CACHE_SIZE:
                    self._text_cache.popitem(last=False)
        for t in texts:
            self._text_cache.move_to_end(t)
        return np.stack([self._text_cache[t] for t in texts]).astype(np.float32)
