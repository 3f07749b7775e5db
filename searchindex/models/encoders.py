"""Image/text encoders.  open_clip and torch are imported only when a model loads."""

from __future__ import annotations

import logging
import os
import platform
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..defaults import DEFAULT_CPU_PRECISION, PRECISIONS
from ..errors import ModelError, WeightsUnavailableError
from .pixels import PixelSpec
from .spec import (
    CHECKPOINT_NAME,
    ModelSpec,
    builtin_models,
    sha256_file,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "Encoder",
    "OpenClipEncoder",
    "encode_calls",
]

log = logging.getLogger(__name__)

def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when a GPU is visible, else CPU.  Without torch, a GPU is one that ONNX
    Runtime's CUDA provider offers (``onnxruntime-gpu``)."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device != "auto":
        return device
    if not _cuda_possible():  # spares the torch import (seconds) where no GPU can be
        return "cpu"
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cuda" if gpu_providers() else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def gpu_providers() -> list[str]:
    """ONNX Runtime's CUDA provider when ``onnxruntime-gpu`` is installed and offers it, else nothing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in ort.get_available_providers() else []


def _cuda_possible() -> bool:
    """False only when CUDA certainly cannot be used: Linux without the NVIDIA driver, or macOS."""
    if platform.system() == "Darwin":
        return False
    if platform.system() == "Linux":
        return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")
    return True


# What `auto` means on a CPU (searchindex.defaults.DEFAULT_CPU_PRECISION): int8 on x86 -- every
# matrix multiply of the image tower by a weight, attention projections included, with
# per-channel int8 weights and per-token int8 activations, under ONNX Runtime
# (searchindex.models.quantize; needs the onnx extra, else fp32).  Per-token ranges keep an
# image's vector independent of its batch mates.
# The int8 tower is prepared once per model and machine -- exported, quantised and
# checked against fp32 on probe scenes (INT8_MIN_COSINE) -- and kept in the shared model
# cache; later runs load only that file (no torch, no open_clip; see .backends).  A model
# whose int8 vectors drift is recorded as rejected and encoded in fp32.  Figures:
# docs/peers.md.  Measured on x86 only; elsewhere (e.g. ARM) auto keeps fp32.
INT8_MIN_COSINE = 0.99  # the quality guard's threshold (mean cosine against fp32 on probe scenes)
#: Images per encoder call: bigger calls fault in more memory and run slower per image.  ViT-B-32-256
#: int8 under ONNX Runtime, 2 cores, per image: 31 ms at 1, 25 at 4, 23 at 8, 24 at 16, 28 at 32;
#: whole 300 x 256 px runs 8.9 s at 16 against 10.3 s at 32 (docs/peers.md).
ENCODE_CHUNK = 16


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
    #: Images encoded by indexing runs so far (counted where a run calls the model): what a
    #: watcher's rename must not raise.
    images_encoded: int = 0

    @abstractmethod
    def preprocess(self, image: Image.Image) -> Any:
        """Turn one RGB image into the model's input tensor (safe to call from threads)."""

    @abstractmethod
    def encode_batch(self, batch: Sequence[Any]) -> np.ndarray:
        """Encode preprocessed images: (n, dim) float32, L2-normalised."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts: (n, dim) float32, L2-normalised."""

    def load(self) -> None:
        """Make the model ready now rather than on first use (which every ``encode_*`` does by
        itself), so that a caller can overlap loading with other work; a no-op when it is."""
        return None

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
                from .spec import HUB, offline_help

                raise WeightsUnavailableError(
                    f"could not download the weights for {spec.describe()}: {text.splitlines()[0][:200]}"
                    + offline_help(os.environ.get("HF_ENDPOINT") or HUB)
                ) from None
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
            return run_image_session(self._onnx_visual, as_array(batch))
        with torch.inference_mode():
            x = torch.stack([torch.as_tensor(b) for b in batch]).to(self.device)
            if self.precision in ("bf16", "fp16"):
                kind = torch.bfloat16 if self.precision == "bf16" else torch.float16
                with torch.autocast(device_type=x.device.type, dtype=kind):
                    feats = self._visual(x)
            else:
                feats = self._visual(x)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return np.asarray(feats.cpu().numpy())

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        found = {t: self._text_cache[t] for t in dict.fromkeys(texts) if t in self._text_cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            torch = self._torch
            from .textforward import short_text_forward, supports_short_text, trim_tokens

            with torch.inference_mode():
                tokens = self._tokenizer(missing).to(self.device)
                if supports_short_text(self._model):  # the padding columns cost 77/n times the work
                    feats = short_text_forward(self._model, trim_tokens(tokens))
                else:
                    feats = self._model.encode_text(tokens, normalize=True)
                feats = feats.float().cpu().numpy()
            found.update(zip(missing, feats, strict=True))
        # A call with more distinct texts than the cache holds must still answer them all.
        for t, f in found.items():
            self._text_cache[t] = f
            self._text_cache.move_to_end(t)
        while len(self._text_cache) > self._TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return np.stack([found[t] for t in texts]).astype(np.float32)


def as_array(batch: Sequence[Any]) -> np.ndarray:
    """Preprocessed images (numpy arrays or torch tensors, CHW) as one float32 NCHW array."""
    if isinstance(batch, np.ndarray):
        return batch
    return np.stack([b if isinstance(b, np.ndarray) else b.numpy() for b in batch]).astype(np.float32, copy=False)


def image_runs() -> tuple[int, int]:
    """How this process runs an ONNX image tower: (calls side by side, ONNX Runtime threads per call).

    One call spread over every core leaves the cores idle between the graph's operators (its
    threads wait for each other, and sleep rather than spin: see ``onnx.cpu_session``); calls on
    one thread each, side by side on the same session, keep every core busy.  ViT-B-32-256
    int8, 2 cores, per image: 25.1 ms as one call on 2 threads, 20.7 ms as two 1-thread calls
    at once.  Up to four calls (a default batch of 64 is four calls of 16); more cores give
    each call more threads.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runs = max(1, min(cores, 4))
    return runs, max(1, cores // runs)


def encode_calls(n: int, runs: int) -> list[tuple[int, int]]:
    """``n`` images as near-equal calls of at most :data:`ENCODE_CHUNK`, as many as fill ``runs``
    (16 images on two runs: two calls of 8, not one of 16 and an idle core)."""
    calls = -(-n // ENCODE_CHUNK)
    calls = min(n, -(-calls // runs) * runs)
    bounds = [i * n // calls for i in range(calls + 1)] if calls else [0]
    return list(pairwise(bounds))


def run_image_session(session: Any, x: np.ndarray) -> np.ndarray:
    """Unit vectors of an NCHW batch from an ONNX image tower (made by ``onnx.image_tower_session``):
    calls of at most :data:`ENCODE_CHUNK` images, :func:`image_runs` of them at a time."""
    runs, _ = image_runs()
    calls = encode_calls(len(x), runs)

    def run(span: tuple[int, int]) -> np.ndarray:
        out: np.ndarray = session.run(None, {"pixels": x[span[0]:span[1]]})[0]
        return out

    if runs > 1 and len(calls) > 1:
        # Threads of this call only: none outlive it (the decode pool forks worker processes).
        with ThreadPoolExecutor(min(runs, len(calls)), thread_name_prefix="encode") as pool:
            parts = list(pool.map(run, calls))
    else:
        parts = [run(c) for c in calls]
    feats: np.ndarray = np.concatenate(parts).astype(np.float32, copy=False)
    out: np.ndarray = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return out
