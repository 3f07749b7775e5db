"""ONNX Runtime copies of a model's text tower, so a search needs neither torch nor open_clip.

Importing torch and open_clip costs seconds; onnxruntime costs ~0.15 s.  The
text tower is exported once, by a process that already has the model loaded
(``index``, ``reindex``, or the first ``search`` that found no export), checked
against torch on a probe batch, and written atomically.  Searches then run it
with :class:`searchindex.models.tokenizer.ClipTokenizer`.

Where the files live: a cache folder shared by every index
(``$SEARCHINDEX_CACHE`` or the platform's user cache folder, under ``onnx/``),
named by a key of the model's identity (checkpoint SHA-256 where there is a
file).  ViT-B-32's text tower is ~250 MB in fp32; one copy per model rather
than per index saves that much for every further index of the same model, and
a read-only index can still use (or make) it.  The weights stay fp32: the
export must reproduce torch's vectors (cosine >= 0.999), and fp16 weights would
need casts in the graph that cost more time than the smaller file saves.

onnxruntime and onnx are in the core install (an environment without them makes
everything here report "not available", and callers fall back to torch).  Graphs
built from a checkpoint without torch are :mod:`searchindex.models.towers`.  The fp32 image
tower for ``--precision onnx`` is exported here too; the prepared int8 image tower is
:mod:`searchindex.models.int8`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ModelError
from ..threads import keep_across_fork, spin_text
from .cache import KEY_FORMAT, cache_root, tower_key, write_atomic
from .spec import ModelSpec
from .textforward import short_text_forward, supports_short_text, trim_tokens

__all__ = ["OnnxTextEncoder", "TextEncoder", "cpu_session", "export_graph", "export_text_tower", "image_session",
           "load_text_encoder", "model_cache_dir", "onnx_available", "onnx_paths", "text_backend"]

if TYPE_CHECKING:
    from .encoders import Encoder, OpenClipEncoder

log = logging.getLogger(__name__)

# Sidecars record the key format their files were made under (see .cache.KEY_FORMAT; 3: the
# text tower takes any token count, see short_text_forward).
_FORMAT = KEY_FORMAT
_PROBE = ["a photo of a red circle", "", "x " * 200, "naïve café, 日本 🐱"]
_MIN_COSINE = 0.999


#: ``SEARCHINDEX_TEXT_BACKEND``: ``auto`` (ONNX Runtime for CPU searches when available), ``onnx`` or ``torch``.
TEXT_BACKENDS = ("auto", "onnx", "torch")


class TextEncoder(Protocol):
    """What a search needs of a model: texts to ``(n, dim)`` unit vectors."""

    dim: int

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def text_backend(device: str) -> str:
    """``onnx`` or ``torch``: how text queries are encoded when no model is loaded yet.

    ``auto`` takes ONNX Runtime (CPU) unless a CUDA device was asked for; the
    ``SEARCHINDEX_TEXT_BACKEND`` environment variable overrides it (``torch``
    reproduces the behaviour before the ONNX path, e.g. for benchmarks).
    """
    chosen = os.environ.get("SEARCHINDEX_TEXT_BACKEND", "auto").strip().lower() or "auto"
    if chosen not in TEXT_BACKENDS:
        log.debug("ignoring SEARCHINDEX_TEXT_BACKEND=%s (not one of %s)", chosen, ", ".join(TEXT_BACKENDS))
        chosen = "auto"
    if chosen == "auto":
        return "torch" if device.startswith("cuda") else "onnx"
    return chosen


def onnx_available(export: bool = False) -> bool:
    """True when onnxruntime (and, for ``export``, onnx) can be imported."""
    names = ["onnxruntime", "onnx"] if export else ["onnxruntime"]
    return all(importlib.util.find_spec(n) is not None for n in names)


def model_cache_dir() -> Path:
    """Where exported towers live: the ``onnx`` folder of :func:`cache_root`."""
    return cache_root() / "onnx"


def onnx_paths(spec: ModelSpec, tower: str) -> tuple[Path, Path]:
    """The ONNX file of ``spec``'s ``tower`` (``image`` or ``text``) in the model cache, and its sidecar."""
    stem = model_cache_dir() / f"{tower_key(spec)}-{tower}"
    return stem.with_suffix(".onnx"), stem.with_suffix(".json")


def _data_name(model_file: Path) -> str:
    return model_file.name + ".data"


def _weights_apart(model_file: Path) -> None:
    """Move the weights out of the protobuf into ``NAME.data``: ONNX Runtime then loads the
    session ~3x faster (measured on ViT-B-32's text tower: 1.1 s against 3.2 s on a busy 2-core machine)."""
    import onnx

    graph = onnx.load(str(model_file))
    onnx.save_model(graph, str(model_file), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=_data_name(model_file), size_threshold=1024)


def cpu_session(path: Path, spin: bool = True, prepack: bool = True, threads: int = 0,
             providers: Sequence[str] = ()) -> Any:
    """An ONNX Runtime CPU session; ``spin=False``: idle threads sleep instead of spinning;
    ``prepack=False``: weights are used as stored instead of repacked for the CPU's kernels;
    ``threads``: threads per call (0: ONNX Runtime's choice, one per physical core).

    Spinning wins microseconds on an idle machine, but when other processes hold the
    cores, spinning threads steal the time the working ones need.  Repacking makes every
    call faster but the session slower to make (ViT-B-32's text tower, here: made in
    0.20 s and run in 10 ms packed, 0.04 s and 30 ms unpacked).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        options.intra_op_num_threads = threads
    # The MatMulIntegerToFloat fusion mishandles the per-row scales and zero point of the
    # int8 graphs searchindex.quantize writes (ONNX Runtime 1.32: wrong results); it has
    # nothing to fuse in fp32 graphs.
    return keep_across_fork(ort.InferenceSession(str(path), options, providers=[*providers, "CPUExecutionProvider"],
                                                 disabled_optimizers=["MatMulIntegerToFloatFusion"]))


def image_tower_session(path: Path, spin: bool = True, providers: Sequence[str] = ()) -> Any:
    """A session of an image tower, with the threads per call that
    :func:`~searchindex.models.encoders.run_image_session` runs it with side by side; ``providers``:
    ONNX Runtime execution providers to try before the CPU (``CUDAExecutionProvider``)."""
    from .encoders import image_runs

    return cpu_session(path, spin=spin, threads=image_runs()[1], providers=providers)


class OnnxTextEncoder:
    """A model's text tower under ONNX Runtime (CPU): texts to unit vectors, like ``Encoder.encode_texts``.

    ``trim``: the graph takes any token count (:func:`short_text_forward`), so a batch is
    cut to its longest text instead of padded to the context length.

    The first call runs on a session that is quick to make (weights not repacked), which is
    what a one-off search in a fresh process needs; a second call means a process that
    answers many (a server, a script), so the session is then remade with repacked weights,
    three times faster per query.
    """

    def __init__(self, model_file: Path, context_length: int, dim: int, trim: bool = False) -> None:
        from .tokenizer import clip_tokenizer

        self._model_file = model_file
        self._session = cpu_session(model_file, spin=spin_text(), prepack=False)
        self._packed = False
        self._used = False
        self._repacking = threading.Lock()
        self._tokenizer = clip_tokenizer(context_length)
        self._trim = trim
        self.dim = dim

    @property
    def trims(self) -> bool:
        """Whether a batch is cut to its longest text (the exported graph takes any token count)."""
        return self._trim

    def _runtime(self) -> Any:
        if self._used and not self._packed:
            with self._repacking:
                if not self._packed:
                    self._session = cpu_session(self._model_file, spin=spin_text())
                    self._packed = True
        self._used = True
        return self._session

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self._tokenizer(list(texts))
        if self._trim:
            tokens = trim_tokens(tokens)
        out = self._runtime().run(None, {"tokens": tokens})[0].astype(np.float32)
        return np.asarray(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12))


def load_text_encoder(spec: ModelSpec) -> OnnxTextEncoder | None:
    """The exported text tower of ``spec``, or None (no onnxruntime, no export yet, unreadable)."""
    if not onnx_available():
        log.debug("onnxruntime is not installed: text queries use torch")
        return None
    model_file, sidecar = onnx_paths(spec, "text")
    try:
        facts = json.loads(sidecar.read_text())
        if "error" in facts:
            log.debug("no ONNX text tower for %s: %s", spec.describe(), facts["error"])
            return None
        return OnnxTextEncoder(model_file, int(facts["context_length"]), int(facts["dim"]),
                               trim=bool(facts.get("any_length")))
    except FileNotFoundError:
        log.debug("no ONNX text tower for %s yet (%s)", spec.describe(), sidecar)
    except Exception as exc:  # a damaged file must never stop a search: torch still works
        log.debug("cannot use the ONNX text tower %s: %s", model_file, exc)
    return None


def _default_tokenizer(encoder: OpenClipEncoder) -> int | None:
    """The context length when the model uses CLIP's default BPE tokenizer, else None."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = getattr(encoder, "tokenizer", None)
    if tok is None or type(tok) is not SimpleTokenizer or tok.reduction_fn is not None:
        return None
    if getattr(tok.clean_fn, "__name__", "") != "_clean_lower":
        return None
    return int(tok.context_length)


def export_text_tower(encoder: Encoder) -> Path | None:
    """Export ``encoder``'s text tower for ONNX Runtime unless done already; its path, or None.

    None when onnx/onnxruntime are missing, the model uses another tokenizer,
    the cache folder cannot be written, or the export does not reproduce torch's
    vectors; the reason is logged at debug level (search then keeps using torch).
    """
    from .encoders import OpenClipEncoder

    if not isinstance(encoder, OpenClipEncoder):
        return None
    model_file, sidecar = onnx_paths(encoder.spec, "text")
    if sidecar.is_file():  # done, or failed before for a reason that does not go away
        return model_file if model_file.is_file() and "error" not in sidecar.read_text() else None
    if not onnx_available(export=True):
        log.debug("onnx/onnxruntime not installed: no ONNX text tower")
        return None
    context_length = _default_tokenizer(encoder)
    if context_length is None:
        log.debug("%s does not use CLIP's default tokenizer: no ONNX text tower", encoder.spec.describe())
        return None
    try:
        return _export_text(encoder, context_length, model_file, sidecar)
    except OSError as exc:  # cache folder not writable, disk full: maybe not next time
        log.debug("cannot write the ONNX text tower of %s: %s", encoder.spec.describe(), exc)
    except Exception as exc:  # exporting is an optimisation; a failure must not fail indexing or search
        log.debug("ONNX export of the %s text tower failed: %s", encoder.spec.describe(), exc)
        # Remember it, so later searches do not spend seconds failing again.
        with contextlib.suppress(OSError):
            facts = {"format": _FORMAT, "model": encoder.spec.describe(), "error": str(exc)[:500]}
            write_atomic(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(facts, indent=1)))
    return None


def _export_text(encoder: OpenClipEncoder, context_length: int, model_file: Path, sidecar: Path) -> Path | None:
    import torch

    from .tokenizer import ClipTokenizer

    short = supports_short_text(encoder.torch_model)

    class TextTower(torch.nn.Module):  # encode_text as forward(), which the exporter traces
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: Any) -> Any:
            if short:
                return short_text_forward(self.model, tokens)
            return self.model.encode_text(tokens, normalize=True)

    tokens = ClipTokenizer(context_length)(_PROBE)
    # Traced on a trimmed batch, so the length axis is not folded into a constant of 77.
    export_graph(encoder, TextTower(encoder.torch_model), trim_tokens(tokens[:2]) if short else tokens, "tokens",
                 model_file, length_axis=short, checks=[tokens, trim_tokens(tokens[:1])] if short else [])
    facts = {"format": _FORMAT, "model": encoder.spec.describe(), "context_length": context_length,
             "dim": encoder.dim, "tokenizer": "clip-bpe", "any_length": short}
    write_atomic(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(facts, indent=1)))
    log.info("exported the %s text tower for ONNX Runtime to %s", encoder.spec.describe(), model_file)
    return model_file


def export_graph(encoder: OpenClipEncoder, module: Any, example: np.ndarray, input_name: str,
                 model_file: Path, length_axis: bool = False, checks: Sequence[np.ndarray] = ()) -> None:
    """Trace ``module`` on ``example`` (batch axis dynamic), check it against torch, move it into place.

    ``length_axis``: axis 1 is dynamic too; ``checks``: more inputs the export must reproduce.
    """
    import warnings

    import torch

    model_file.parent.mkdir(parents=True, exist_ok=True)
    model = encoder.torch_model
    # The exporter puts ``module`` back in the mode it found it in: a fresh wrapper is in
    # training mode, which would leave the encoder's own model training afterwards
    # (BatchNorm layers then normalise with batch statistics, changing every later vector).
    module.eval()
    device = next(model.parameters()).device
    if device.type != "cpu":
        model.cpu()
    try:
        with tempfile.TemporaryDirectory(dir=model_file.parent, prefix=".export-") as tmp:
            staged = Path(tmp) / model_file.name
            x = torch.from_numpy(example)
            # nn.MultiheadAttention's inference fast path is one fused op ONNX has no export for.
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")  # TorchScript-exporter deprecation notices
                    axes = {0: "n", 1: "length"} if length_axis else {0: "n"}
                    torch.onnx.export(module, (x,), str(staged), input_names=[input_name],
                                      output_names=["embedding"],
                                      dynamic_axes={input_name: axes, "embedding": {0: "n"}},
                                      opset_version=17, dynamo=False)
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)
            _weights_apart(staged)
            session = cpu_session(staged)
            for probe in [example, *checks]:
                with torch.inference_mode():
                    want = module(torch.from_numpy(probe)).float().numpy()
                got = session.run(None, {input_name: probe})[0]
                want /= np.linalg.norm(want, axis=1, keepdims=True)
                got /= np.linalg.norm(got, axis=1, keepdims=True)
                cosine = float(np.min(np.sum(got * want, axis=1)))
                if cosine < _MIN_COSINE:
                    raise ValueError(f"exported tower disagrees with torch (min cosine {cosine:.5f})")
            del session
            for name in (_data_name(model_file), model_file.name):  # weights first: the graph names them
                os.chmod(Path(tmp) / name, 0o644)
                os.replace(Path(tmp) / name, model_file.parent / name)
    finally:
        model.eval()
        if device.type != "cpu":
            model.to(device)


def image_session(encoder: OpenClipEncoder) -> Any:
    """An ONNX Runtime session of ``encoder``'s image tower (exported first if needed).

    Input ``pixels`` (n, 3, S, S) float32 normalised as the model expects; output
    the unnormalised image features.

    Raises:
        ModelError: onnxruntime/onnx are not installed, or the export failed.
    """
    if not onnx_available(export=True):
        raise ModelError("precision 'onnx' needs ONNX Runtime: pip install onnxruntime onnx")
    model_file, sidecar = onnx_paths(encoder.spec, "image")
    if not (sidecar.is_file() and model_file.is_file()):
        size = encoder.image_size
        rng = np.random.default_rng(0)
        example = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        try:
            export_graph(encoder, encoder.torch_model.visual, example, "pixels", model_file)
        except Exception as exc:
            raise ModelError(f"could not export the {encoder.spec.describe()} image tower to ONNX: {exc}") from exc
        facts = {"format": _FORMAT, "model": encoder.spec.describe(), "image_size": size, "dim": encoder.dim}
        write_atomic(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(facts, indent=1)))
        log.info("exported the %s image tower for ONNX Runtime to %s", encoder.spec.describe(), model_file)
    return image_tower_session(model_file)
