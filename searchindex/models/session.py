"""The models one open index uses, each loaded once, on first need.

:class:`ModelSession` holds an index's image/text encoder, the ONNX Runtime copy
of its text tower (cold searches without torch), a query-vector cache and the
ITM scorers a rerank asked for.  It decides which text encoder answers a query:
the cache, else a model already loaded, else the exported tower, else the full
model (exporting its tower for next time).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..errors import ModelMismatchError, QueryError
from ..fileio import read_bounded
from .onnx import TextEncoder, export_text_tower, load_text_encoder, text_backend
from .spec import ModelSpec

if TYPE_CHECKING:
    from .captioners import ItmScorer
    from .encoders import Encoder

__all__ = ["ModelSession", "QueryVectorCache"]


class QueryVectorCache(Protocol):
    """Where query vectors are kept between searches (see :class:`searchindex.store.querycache.QueryCache`)."""

    def get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]: ...

    def put_many(self, vectors: Mapping[str, np.ndarray]) -> None: ...

    def close(self) -> None: ...


class ModelSession:
    """The encoder of ``spec`` (``dim``-d vectors) on ``device`` at ``precision``, and its helpers.

    Args:
        cache: makes the query-vector cache on first use (``None``: no cache).
    """

    def __init__(self, spec: ModelSpec, dim: int, *, device: str = "auto", precision: str = "auto",
                 cache: Callable[[], QueryVectorCache] | None = None) -> None:
        self.spec = spec
        self.dim = dim
        self.device = device
        self.precision = precision
        self._make_cache = cache
        self._cache: QueryVectorCache | None = None
        self._encoder: Encoder | None = None
        self._text_encoder: TextEncoder | None = None
        self._itm: dict[str, ItmScorer] = {}
        self._lock = threading.RLock()

    # -- what is loaded -------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The image/text encoder, loaded once on first use.

        Raises:
            ModelMismatchError: the model makes vectors of another size than the index holds.
        """
        with self._lock:
            if self._encoder is None:
                from .backends import load_encoder

                encoder = load_encoder(self.spec, self.device, self.precision)
                if encoder.dim != self.dim:
                    raise ModelMismatchError(
                        f"{self.spec.describe()} makes {encoder.dim}-d vectors but the index holds {self.dim}-d"
                    )
                self._encoder = encoder
            return self._encoder

    @property
    def loaded(self) -> str | None:
        """Which text/image model is in memory: ``"torch"`` (the full model), ``"onnx"`` (only the
        exported text tower) or ``None`` (nothing: e.g. every query so far came from the cache)."""
        if self._encoder is not None:
            return "torch"
        return "onnx" if self._text_encoder is not None else None

    @property
    def images_encoded(self) -> int:
        """Images the loaded encoder has encoded for indexing runs (0 while none is loaded)."""
        return self._encoder.images_encoded if self._encoder is not None else 0

    def take_models_of(self, other: ModelSession) -> None:
        """Keep the models ``other`` (a session of the same weights) has loaded."""
        with self._lock:
            self._encoder, self._text_encoder, self._itm = other._encoder, other._text_encoder, dict(other._itm)

    def adopt(self, encoder: Encoder) -> None:
        """Use an encoder loaded elsewhere (``Index.create`` loads one to check the model)."""
        with self._lock:
            self._encoder = encoder

    def after_indexing(self) -> None:
        """With the model loaded by an indexing run, export its text tower so searches need no torch."""
        if self._encoder is not None and text_backend(self.device) == "onnx":
            export_text_tower(self._encoder)

    # -- encoding ---------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit embeddings of query texts: from the query cache, else the cheapest text encoder at hand.

        A text seen before (by any process) comes from the cache, with no model
        loaded.  Otherwise the loaded model encodes it if there is one; else the
        ONNX Runtime copy of the text tower (no torch import, see
        :mod:`searchindex.models.onnx`); else the full model.
        """
        cache = self._query_cache()
        found = cache.get_many(texts) if cache is not None else {}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            new = dict(zip(missing, self._text_model().encode_texts(missing), strict=True))
            if cache is not None:
                cache.put_many(new)
            found.update(new)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def encode_image_file(self, path: str | os.PathLike[str], what: str) -> np.ndarray:
        """The unit embedding of the image file at ``path`` (``what`` names it in errors).

        Raises:
            QueryError: the file cannot be read or decoded.
        """
        try:
            data, _ = read_bounded(Path(path).expanduser())  # a regular file of bounded size only
        except OSError as exc:
            raise QueryError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
        from .images import decode_image

        try:
            image = decode_image(data, str(path)).image
        except Exception as exc:
            raise QueryError(f"cannot use {what} {path}: {getattr(exc, 'reason', exc)}") from None
        return np.asarray(self.encoder.encode_images([image])[0])

    def itm_scorer(self, model: str | None) -> ItmScorer:
        """BLIP's image-text matching scorer ``model`` (default model when ``None``), loaded once.

        Raises:
            MissingExtraError: transformers is not installed (``searchindex[caption]``).
        """
        with self._lock:
            key = model or ""
            if key not in self._itm:
                from .captioners import load_itm  # transformers loads inside, or MissingExtraError

                self._itm[key] = load_itm(model, device=self.device) if model else load_itm(device=self.device)
            return self._itm[key]

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _query_cache(self) -> QueryVectorCache | None:
        with self._lock:
            if self._cache is None and self._make_cache is not None:
                self._cache = self._make_cache()
            return self._cache

    def _text_model(self) -> TextEncoder:
        """The loaded model, else the text tower in the model cache, else one built without torch, else the
        model (exporting its tower for next time)."""
        with self._lock:
            if self._encoder is not None:
                return self._encoder
            if self._text_encoder is None and text_backend(self.device) == "onnx":
                from .towers import text_encoder, verify_weights

                verify_weights(self.spec)  # a weights file changed in place is refused here too
                self._text_encoder = load_text_encoder(self.spec) or text_encoder(self.spec)
                if self._text_encoder is not None and self._text_encoder.dim != self.dim:
                    self._text_encoder = None
            if self._text_encoder is not None:
                return self._text_encoder
            encoder = self.encoder
            if text_backend(self.device) == "onnx":
                export_text_tower(encoder)
            return encoder
