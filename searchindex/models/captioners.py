"""Captioners and the BLIP image-text matching scorer (optional extra ``searchindex[caption]``).

A :class:`Captioner` turns images into sentences with any ``transformers``
image-to-text model that generates from pixels (BLIP, BLIP-2, GIT); an
:class:`ItmScorer` gives the probability that an image matches a text with BLIP's
image-text matching head, a cross-encoder: slower than comparing CLIP vectors but a
better judge of one pair, so it re-scores the top of a CLIP ranking.

torch and transformers are imported only when a model loads.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..defaults import DEFAULT_CAPTION_MODEL, DEFAULT_ITM_MODEL
from ..errors import MissingExtraError, ModelError, UnknownModelError, WeightsUnavailableError

if TYPE_CHECKING:
    from PIL import Image


__all__ = [
    "CAPTIONER_KINDS",
    "Captioner",
    "CaptionerKind",
    "ItmScorer",
    "TransformersCaptioner",
    "load_captioner",
    "load_itm",
]

log = logging.getLogger(__name__)


_EXTRA_HINT = "pip install 'searchindex[caption]'"


@dataclass(frozen=True)
class CaptionerKind:
    """How one family of ``transformers`` image-to-text models is driven.

    Attributes:
        model_class: the ``transformers`` class that generates from pixels.
        prompt_open: the prompt must end open (no closing ``[SEP]``) so that the
            model continues it; BLIP drops that token itself, GIT does not.
    """

    model_class: str
    prompt_open: bool = False


#: Known model families by ``config.model_type``.  Other image-to-text models that
#: ``AutoModelForImageTextToText`` knows are tried with the defaults.
CAPTIONER_KINDS = MappingProxyType({
    "blip": CaptionerKind("BlipForConditionalGeneration"),
    "blip-2": CaptionerKind("Blip2ForConditionalGeneration"),
    "git": CaptionerKind("GitForCausalLM", prompt_open=True),
})


class Captioner(ABC):
    """Writes one caption per image.

    Attributes:
        model_id: the model as given (hub id or local folder); recorded with each caption.
        prompt: text the captions continue (conditional captioning), or ``None``.
        image_size: the side the model sees (JPEGs may be decoded reduced down to it).
    """

    model_id: str
    prompt: str | None = None
    image_size: int = 384

    @abstractmethod
    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per RGB image, in order (without the prompt)."""


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(f"captioning needs transformers: {_EXTRA_HINT}") from None
    return transformers


def _source(model: str, option: str) -> str:
    """The folder or hub id to load; a missing local folder fails here with a clear message.

    Hub ids are ``org/name``; anything else that names no folder is taken for a mistyped path.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        raise WeightsUnavailableError(f"no model folder at {model} (give {option} a folder saved by "
                                      "save_pretrained, or a Hugging Face hub id)")
    return model


def _load_failed(model: str, option: str, exc: Exception) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"could not load {model}: {exc}. On a machine without internet access, download the model "
        f"elsewhere (huggingface-cli download {model} --local-dir FOLDER) and pass {option} FOLDER"
    )


def _config(transformers: Any, model: str, option: str) -> tuple[str, Any]:
    """(source, configuration) of ``model``; an unreachable one fails naming ``option``."""
    source = _source(model, option)
    try:
        return source, transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise _load_failed(model, option, exc) from None


def _device_and_dtype(device: str) -> tuple[str, Any]:
    import torch

    from .encoders import resolve_device

    device = resolve_device(device)
    # fp16 halves memory and roughly doubles GPU throughput; CPUs have no fast fp16.
    return device, torch.float16 if device.startswith("cuda") else torch.float32


class TransformersCaptioner(Captioner):
    """Any ``transformers`` image-to-text generator with its processor.

    Build one with :func:`load_captioner`, or directly from a model and processor
    already in memory (benchmarks build random-weight models this way).
    """

    def __init__(self, model: Any, processor: Any, model_id: str, *, kind: CaptionerKind | None = None,
                 prompt: str | None = None, max_new_tokens: int = 30, num_beams: int = 3) -> None:
        import torch

        if max_new_tokens < 1 or num_beams < 1:
            raise ValueError("max_new_tokens and num_beams must be at least 1")
        self._torch = torch
        self._model = model.eval()
        self._processor = processor
        self._kind = kind or CaptionerKind(type(model).__name__)
        self.model_id = model_id
        self.prompt = prompt.strip() if prompt and prompt.strip() else None
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.image_size = _image_size(processor)
        tokenizer = getattr(processor, "tokenizer", processor)
        # The prompt as it comes back from the tokenizer (lower-cased, spaced), to strip it from captions.
        self._echo = (tokenizer.decode(tokenizer(self.prompt, add_special_tokens=False)["input_ids"],
                                       skip_special_tokens=True).strip() if self.prompt else "")

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        if not images:
            return []
        torch = self._torch
        param = next(self._model.parameters())
        texts = [self.prompt] * len(images) if self.prompt else None
        inputs = dict(self._processor(images=list(images), text=texts, return_tensors="pt"))
        inputs.pop("token_type_ids", None)  # BERT tokenizers add them; decoders such as GIT's refuse them
        if self.prompt and self._kind.prompt_open:
            inputs["input_ids"] = inputs["input_ids"][:, :-1]
            if "attention_mask" in inputs:
                inputs["attention_mask"] = inputs["attention_mask"][:, :-1]
        inputs = {k: v.to(param.device, dtype=param.dtype) if v.is_floating_point() else v.to(param.device)
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                       do_sample=False)
        decoded = self._processor.batch_decode(out, skip_special_tokens=True)
        return [self._strip_prompt(text) for text in decoded]

    def _strip_prompt(self, text: str) -> str:
        text = " ".join(text.split())
        if self._echo and text.lower().startswith(self._echo.lower()):
            text = text[len(self._echo):]
        return text.strip()


def _image_size(processor: Any) -> int:
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    if isinstance(size, int):
        return size
    if not isinstance(size, dict):
        size = dict(size)
    sides = [v for k, v in size.items() if k in ("height", "width", "shortest_edge") and v]
    return int(min(sides)) if sides else 384


def load_captioner(
    model: str = DEFAULT_CAPTION_MODEL,
    *,
    device: str = "auto",
    prompt: str | None = None,
    max_new_tokens: int = 30,
    num_beams: int = 3,
) -> Captioner:
    """Load an image-to-text model from the Hugging Face hub or a local folder.

    Args:
        model: a hub id (downloaded once, then cached) or a folder saved with
            ``save_pretrained``; the family comes from its ``config.json`` (see
            :data:`CAPTIONER_KINDS`).
        device: ``auto`` (CUDA when visible, fp16 there), ``cpu`` or ``cuda``.
        prompt: conditional captioning: captions continue this text (``"a photo of"``),
            which is then stripped from them.
        max_new_tokens, num_beams: generation length and beam width (1 = greedy).

    Raises:
        MissingExtraError: transformers is not installed.
        WeightsUnavailableError: no such folder, or the weights cannot be downloaded.
        UnknownModelError: the model does not generate text from images.
    """
    transformers = _transformers()
    source, config = _config(transformers, model, "--model")
    kind = CAPTIONER_KINDS.get(config.model_type)
    if kind is None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as known

        if config.model_type not in known:
            raise UnknownModelError(
                f"{model} is a {config.model_type!r} model, which does not write captions from images "
                f"(known kinds: {', '.join(CAPTIONER_KINDS)})")
        kind = CaptionerKind(known[config.model_type])
    heads = list(getattr(config, "architectures", None) or [])
    if heads and kind.model_class not in heads:
        # BLIP's captioning, retrieval and VQA checkpoints share one model_type.
        raise UnknownModelError(f"{model} is a {heads[0]} checkpoint, not a captioner ({kind.model_class})")
    device, dtype = _device_and_dtype(device)
    try:
        cls = getattr(transformers, kind.model_class)
        net = cls.from_pretrained(source, dtype=dtype).to(device)
        processor = transformers.AutoProcessor.from_pretrained(source)
    except OSError as exc:
        raise _load_failed(model, "--model", exc) from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"could not load {model}: {exc}") from None
    log.info("captioner %s (%s) on %s", model, kind.model_class, device)
    return TransformersCaptioner(net, processor, model, kind=kind, prompt=prompt, max_new_tokens=max_new_tokens,
                                 num_beams=num_beams)


class ItmScorer:
    """BLIP's image-text matching head: the probability that each image shows ``text``.

    Attributes:
        model_id: the model as given.
        batch_size: images per forward pass.
    """

    def __init__(self, model: Any, processor: Any, model_id: str, *, batch_size: int = 16) -> None:
        import torch

        self._torch = torch
        self._model = model.eval()
        self._processor = processor
        self.model_id = model_id
        self.batch_size = batch_size
        self.image_size = _image_size(processor)

    def score(self, images: Sequence[Image.Image], text: str) -> np.ndarray:
        """Match probabilities in [0, 1], one per image (float32)."""
        torch = self._torch
        param = next(self._model.parameters())
        tokens = self._processor.tokenizer([text], return_tensors="pt")
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start:start + self.batch_size])
            pixels = self._processor.image_processor(chunk, return_tensors="pt")["pixel_values"]
            n = len(chunk)
            with torch.inference_mode():
                # BlipForImageTextRetrieval.forward(use_itm_head=True), spelled out so that the image
                # attention mask is made on the model's device (forward makes it on the CPU).
                image_embeds = self._model.vision_model(pixel_values=pixels.to(param.device, dtype=param.dtype))[0]
                hidden = self._model.text_encoder(
                    input_ids=tokens["input_ids"].repeat(n, 1).to(param.device),
                    attention_mask=tokens["attention_mask"].repeat(n, 1).to(param.device),
                    encoder_hidden_states=image_embeds,
                    encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long,
                                                      device=param.device),
                )[0]
                logits = self._model.itm_head(hidden[:, 0, :])
                out.append(torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def load_itm(model: str = DEFAULT_ITM_MODEL, *, device: str = "auto", batch_size: int = 16) -> ItmScorer:
    """Load a ``BlipForImageTextRetrieval`` model (hub id or local folder) for :class:`ItmScorer`.

    Raises:
        MissingExtraError, WeightsUnavailableError: as for :func:`load_captioner`.
        UnknownModelError: the model is not a BLIP model.
    """
    transformers = _transformers()
    source, config = _config(transformers, model, "--itm-model")
    heads = list(getattr(config, "architectures", None) or ["BlipForImageTextRetrieval"])
    if config.model_type != "blip" or "BlipForImageTextRetrieval" not in heads:
        raise UnknownModelError(f"{model} is a {heads[0] if heads else config.model_type} model; image-text "
                                "matching needs a BLIP retrieval model (BlipForImageTextRetrieval)")
    device, dtype = _device_and_dtype(device)
    try:
        net = transformers.BlipForImageTextRetrieval.from_pretrained(source, dtype=dtype).to(device)
        processor = transformers.AutoProcessor.from_pretrained(source)
    except OSError as exc:
        raise _load_failed(model, "--itm-model", exc) from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"could not load {model}: {exc}") from None
    return ItmScorer(net, processor, model, batch_size=batch_size)
