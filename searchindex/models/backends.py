"""The encoder factory: one entry point that loads a model for a precision, with a registry of backends.

Every encoder is an :class:`~searchindex.models.encoders.OpenClipEncoder` (fp32,
bf16, fp16, or int8 under ONNX Runtime through :mod:`.quantize`), except int8 on a CPU
once its tower is prepared: a :class:`~searchindex.models.int8.PreparedEncoder`; a backend registered for a
precision finishes it after loading, the way open_clip's ``create_model``
dispatches on a name.  ``onnx`` attaches an ONNX Runtime image tower (exported
and cached on first use, see :mod:`.onnx`).  A third party can register another
backend (``BACKENDS.register("myprec", finish)``) without touching this package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .encoders import Encoder, OpenClipEncoder, resolve_device, resolve_precision
from .spec import ModelSpec

__all__ = ["BACKENDS", "EncoderBackends", "load_encoder"]

log = logging.getLogger(__name__)


class EncoderBackends:
    """Precision -> a function that finishes a loaded encoder for it."""

    def __init__(self) -> None:
        self._finish: dict[str, Callable[[OpenClipEncoder], None]] = {}

    def register(self, precision: str, finish: Callable[[OpenClipEncoder], None]) -> None:
        self._finish[precision] = finish

    def load(self, spec: ModelSpec, device: str = "auto", precision: str = "auto") -> Encoder:
        """Load the encoder for ``spec`` (downloads weights on first use of a tag).

        ``precision`` applies to image encoding (see
        :func:`~searchindex.models.encoders.resolve_precision`); text queries are
        always encoded in fp32.

        Raises:
            UnknownModelError, WeightsUnavailableError, ModelError.
        """
        if precision in ("auto", "int8") and resolve_device(device) == "cpu" \
                and resolve_precision(precision, "cpu") == "int8":
            # The int8 tower an earlier run prepared: loaded without torch or open_clip.
            from .int8 import PreparedEncoder, load_int8_tower

            loaded = load_int8_tower(spec)
            if loaded is not None:
                return PreparedEncoder(spec, *loaded)
        encoder = OpenClipEncoder(spec, device=device, precision=precision)
        finish = self._finish.get(encoder.precision)
        if finish is not None:
            finish(encoder)
        return encoder


def _onnx_images(encoder: OpenClipEncoder) -> None:
    from .onnx import image_session  # onnxruntime loads inside, or ModelError says what to install

    encoder.attach_image_runtime(image_session(encoder))


def _int8_images(encoder: OpenClipEncoder) -> None:
    """Attach the prepared int8 tower (built now if needed), or fall back to fp32 and say why."""
    from . import encoders
    from .int8 import int8_verdict, prepare_int8_tower
    from .onnx import onnx_available

    spec = encoder.spec
    try:
        prepared = prepare_int8_tower(encoder, encoders.INT8_MIN_COSINE)
    except Exception as exc:  # an export or quantisation bug must not stop indexing: fp32 still works
        log.warning("%s: could not prepare the int8 image tower (%s); encoding in fp32", spec.describe(), exc)
        prepared = None
    if prepared is not None:
        encoder.attach_image_runtime(prepared[0])
        return
    verdict = int8_verdict(spec)
    if verdict is not None:
        log.warning("%s: int8 image vectors drift from fp32 (mean cosine %.4f < %.2f); encoding in fp32",
                    spec.describe(), verdict, encoders.INT8_MIN_COSINE)
    elif not onnx_available(export=True):
        log.info("int8 needs ONNX Runtime (pip install 'searchindex[onnx]'); encoding in fp32")
    encoder.precision = "fp32"


#: The registry every index uses.
BACKENDS = EncoderBackends()
BACKENDS.register("onnx", _onnx_images)
BACKENDS.register("int8", _int8_images)

load_encoder = BACKENDS.load
