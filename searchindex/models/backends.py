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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .encoders import Encoder, OpenClipEncoder, gpu_providers, resolve_device, resolve_precision
from .spec import ModelSpec

if TYPE_CHECKING:
    from .towers import Towers

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
        always encoded in fp32.  On a CPU, int8 (the default on x86) and ``onnx`` run ONNX
        Runtime graphs made without torch wherever they can be (:mod:`.towers`); torch and
        open_clip load only for what needs them (another precision, or a model the graph
        builder does not cover).

        Raises:
            UnknownModelError, WeightsUnavailableError, ModelError,
            MissingExtraError: only the torch extra can run this model or precision.
        """
        from .towers import make_towers, needs_torch, torch_available, torchless, verify_weights

        verify_weights(spec)  # a local weights file changed in place is refused before any engine uses it
        with_torch = torch_available()
        device = resolve_device(device)
        if device.startswith("cuda") and not with_torch:
            # onnxruntime-gpu without torch: the fp32 graph on ONNX Runtime's CUDA provider.
            if precision not in ("auto", "fp32", "onnx"):
                raise needs_torch(spec, f"{precision} on a GPU")
            if not torchless(spec):
                raise needs_torch(spec)
            return _graph_encoder(spec, make_towers(spec), "fp32", gpu_providers())
        precision = resolve_precision(precision, device)
        if device == "cpu" and precision == "int8":
            # The int8 tower an earlier run prepared: loaded without torch or open_clip.
            from .int8 import PreparedEncoder, load_int8_tower, prepare_int8_from_graph

            loaded = load_int8_tower(spec)
            if loaded is not None:
                return PreparedEncoder(spec, *loaded)
            if torchless(spec):
                from . import encoders

                towers = make_towers(spec)
                made = prepare_int8_from_graph(spec, towers.image, towers.pixel_spec, towers.dim, towers.image_size,
                                               towers.source, encoders.INT8_MIN_COSINE)
                if made is not None:
                    return PreparedEncoder(spec, *made)
                log.warning("%s: int8 image vectors drift from fp32; encoding in fp32", spec.describe())
                return _graph_encoder(spec, towers, "fp32")
        if device == "cpu" and (precision == "onnx" or (precision == "fp32" and not with_torch)) and torchless(spec):
            return _graph_encoder(spec, make_towers(spec), precision)
        if not with_torch:
            raise needs_torch(spec) if precision in ("int8", "onnx", "fp32") \
                else needs_torch(spec, f"{precision} precision")
        encoder = OpenClipEncoder(spec, device=device, precision=precision)
        finish = self._finish.get(encoder.precision)
        if finish is not None:
            finish(encoder)
        return encoder


def _graph_encoder(spec: ModelSpec, towers: Towers, precision: str, providers: Sequence[str] = ()) -> Encoder:
    """An encoder over ``towers``' fp32 image graph under ONNX Runtime (no torch)."""
    from .int8 import PreparedEncoder

    facts = {"dim": towers.dim, "image_size": towers.image_size, "pixel_spec": towers.pixel_spec.to_json()}
    return PreparedEncoder(spec, towers.image, facts, precision=precision, providers=providers)


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
        log.info("int8 needs ONNX Runtime (pip install onnxruntime onnx); encoding in fp32")
    encoder.precision = "fp32"


#: The registry every index uses.
BACKENDS = EncoderBackends()
BACKENDS.register("onnx", _onnx_images)
BACKENDS.register("int8", _int8_images)

load_encoder = BACKENDS.load
