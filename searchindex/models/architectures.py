"""open_clip architectures described without torch: what the ONNX graph builder needs to know.

:class:`ClipArchitecture` holds every choice of an open_clip model config that changes the
arithmetic of a plain ViT image tower and a plain text transformer (the ``CLIP`` class).
:func:`from_open_clip_config` reads one from a model config and refuses, with
:class:`UnsupportedArchitecture`, every config the builder (:mod:`.graphs`) does not
cover: timm or ResNet image towers, Hugging Face text towers, attentional poolers
(CoCa), custom attention blocks, SigLIP's custom text tower.

The catalogue (``open_clip_catalogue.json``, written by ``scripts/make_model_catalogue.py``
from the installed open_clip) holds every architecture's config and, per pretrained
tag, where its weights live and how its images are preprocessed, so a torch-free
install can name a model and prepare it without open_clip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelError, UnknownModelError

__all__ = [
    "CATALOGUE_PATH",
    "ClipArchitecture",
    "UnsupportedArchitecture",
    "architecture",
    "catalogue",
    "from_open_clip_config",
    "preprocess",
    "pretrained_source",
    "safetensors_name",
]

CATALOGUE_PATH = Path(__file__).with_name("open_clip_catalogue.json")

#: open_clip's defaults for the fields a config may leave out (its CLIPVisionCfg, CLIPTextCfg
#: and PreprocessCfg dataclasses); only these fields are read.
_VISION_DEFAULTS: dict[str, Any] = {
    "layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16, "image_size": 224,
    "ls_init_value": None, "no_ln_pre": False, "final_ln_after_pool": False, "pool_type": "tok",
    "pos_embed_type": "learnable",
}
_TEXT_DEFAULTS: dict[str, Any] = {
    "context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0,
    "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "pool_type": "argmax",
    "proj_bias": False, "proj_type": "linear",
}
#: open_clip's preprocessing where a config or tag says nothing (OpenAI CLIP's mean and std, bicubic, shortest side).
PREPROCESS_DEFAULTS: dict[str, Any] = {
    "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic", "resize_mode": "shortest",
}
#: Config keys whose value, when set (true / non-empty), selects arithmetic the builder lacks.
_VISION_REFUSED = ("timm_model_name", "attentional_pool", "qk_norm", "scaled_cosine_attn", "scale_heads",
                   "scale_attn_inner", "scale_attn", "scale_fc", "output_tokens", "act_kwargs")
_TEXT_REFUSED = ("hf_model_name", "embed_cls", "no_causal_mask", "qk_norm", "scaled_cosine_attn", "scale_heads",
                 "scale_attn_inner", "scale_attn", "scale_fc", "output_tokens", "act_kwargs")
_HINT = "needs searchindex[torch]"


class UnsupportedArchitecture(ModelError):
    """The architecture has parts the torch-free graph builder does not cover."""


@dataclass(frozen=True)
class ClipArchitecture:
    """The shape of an open_clip ``CLIP`` model with a plain ViT image tower and text transformer.

    ``*_layer_scale``: whether each block scales its two branches by learnt ``ls_1`` /
    ``ls_2`` gammas (a config's ``ls_init_value``).  ``vision_pool``: ``"tok"`` (the class
    token) or ``"avg"`` (mean of the patch tokens).  ``vision_final_ln_after_pool``: the
    final LayerNorm runs on the pooled vector instead of on every token.
    ``text_projection``: ``"matrix"`` (a bias-free ``(width, embed_dim)`` parameter),
    ``"linear"`` (with bias) or ``"none"``.  ``norm_eps``: every LayerNorm's epsilon.
    """

    embed_dim: int
    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    vision_width: int
    vision_layers: int
    vision_heads: int
    context_length: int
    vocab_size: int
    text_width: int
    text_heads: int
    text_layers: int
    quick_gelu: bool = False
    vision_mlp_ratio: float = 4.0
    vision_layer_scale: bool = False
    vision_no_ln_pre: bool = False
    vision_pool: str = "tok"
    vision_final_ln_after_pool: bool = False
    text_mlp_ratio: float = 4.0
    text_layer_scale: bool = False
    text_projection: str = "matrix"
    norm_eps: float = 1e-5

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row."""
        return self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]

    @property
    def text_dim(self) -> int:
        """The text vector's size: ``embed_dim``, or the text width where there is no projection."""
        return self.text_width if self.text_projection == "none" else self.embed_dim

    @property
    def vision_mlp_width(self) -> int:
        return int(self.vision_width * self.vision_mlp_ratio)

    @property
    def text_mlp_width(self) -> int:
        return int(self.text_width * self.text_mlp_ratio)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _refuse(name: str, what: str) -> UnsupportedArchitecture:
    return UnsupportedArchitecture(f"{name}: {what} is not built without torch; it {_HINT}")


def from_open_clip_config(model_cfg: Mapping[str, Any], quick_gelu: bool = False,
                          name: str = "this model") -> ClipArchitecture:
    """The architecture of an open_clip model config (a ``model_configs/*.json`` dict).

    ``quick_gelu`` forces QuickGELU (as open_clip's ``force_quick_gelu``); a config's own
    ``quick_gelu`` also sets it.  ``name`` only words the error.

    Raises:
        UnsupportedArchitecture: the config has a part the builder does not cover (timm or
            ResNet image tower, Hugging Face text tower, attentional pooler, CoCa, custom
            attention blocks, SigLIP-style custom text tower, non-argmax text pooling ...).
    """
    vision = {**_VISION_DEFAULTS, **dict(model_cfg.get("vision_cfg") or {})}
    text = {**_TEXT_DEFAULTS, **dict(model_cfg.get("text_cfg") or {})}
    if model_cfg.get("multimodal_cfg"):
        raise _refuse(name, "a CoCa model (multimodal decoder)")
    if model_cfg.get("custom_text"):
        raise _refuse(name, "a custom text tower (as SigLIP's)")
    if "init_logit_bias" in model_cfg:
        raise _refuse(name, "a sigmoid-loss (SigLIP) model")
    for key in _VISION_REFUSED:
        if vision.get(key):
            raise _refuse(name, f"an image tower with {key}={vision[key]!r}")
    for key in _TEXT_REFUSED:
        if text.get(key):
            raise _refuse(name, f"a text tower with {key}={text[key]!r}")
    if isinstance(vision["layers"], (list, tuple)):
        raise _refuse(name, "a ResNet image tower")
    if vision.get("block_type") not in (None, "default") or text.get("block_type") not in (None, "default"):
        raise _refuse(name, "a custom attention block")
    if vision["pool_type"] not in ("tok", "avg"):
        raise _refuse(name, f"image pooling {vision['pool_type']!r}")
    if vision["pos_embed_type"] not in ("learnable", "sin_cos_2d"):  # both are stored tensors
        raise _refuse(name, f"image position embedding {vision['pos_embed_type']!r}")
    if text["pool_type"] != "argmax":
        raise _refuse(name, f"text pooling {text['pool_type']!r}")
    norms = {tuple(sorted((cfg.get("norm_kwargs") or {}).items())) for cfg in (vision, text)}
    eps = {dict(n).get("eps", 1e-5) for n in norms}
    if len(eps) != 1 or any(set(dict(n)) - {"eps"} for n in norms):
        raise _refuse(name, f"LayerNorm options {sorted(norms)}")
    if text["proj_type"] == "none":
        projection = "none"
    elif text["proj_type"] == "linear":
        projection = "linear" if text["proj_bias"] else "matrix"
    else:
        raise _refuse(name, f"text projection {text['proj_type']!r}")
    width, head_width = int(vision["width"]), int(vision["head_width"])
    if width % head_width or int(text["width"]) % int(text["heads"]):
        raise _refuse(name, "a width that does not split into whole heads")
    return ClipArchitecture(
        embed_dim=int(model_cfg["embed_dim"]),
        image_size=_pair(vision["image_size"]),
        patch_size=_pair(vision["patch_size"]),
        vision_width=width,
        vision_layers=int(vision["layers"]),
        vision_heads=width // head_width,
        context_length=int(text["context_length"]),
        vocab_size=int(text["vocab_size"]),
        text_width=int(text["width"]),
        text_heads=int(text["heads"]),
        text_layers=int(text["layers"]),
        quick_gelu=bool(quick_gelu or model_cfg.get("quick_gelu", False)),
        vision_mlp_ratio=float(vision["mlp_ratio"]),
        vision_layer_scale=vision["ls_init_value"] is not None,
        vision_no_ln_pre=bool(vision["no_ln_pre"]),
        vision_pool=str(vision["pool_type"]),
        vision_final_ln_after_pool=bool(vision["final_ln_after_pool"]),
        text_mlp_ratio=float(text["mlp_ratio"]),
        text_layer_scale=text["ls_init_value"] is not None,
        text_projection=projection,
        norm_eps=float(eps.pop()),
    )


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Any]:
    """The shipped open_clip catalogue: ``{"open_clip": version, "models": {name: {"config": ...,
    "pretrained": {tag: {"hf_hub", "file", "quick_gelu", "preprocess"}}}}}`` (read once)."""
    data: dict[str, Any] = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    return data


def _entry(name: str) -> dict[str, Any]:
    models: dict[str, Any] = catalogue()["models"]
    if name not in models:
        raise UnknownModelError(f"{name!r} is not an open_clip architecture (open_clip {catalogue()['open_clip']})")
    entry: dict[str, Any] = models[name]
    return entry


def _tag(name: str, tag: str) -> dict[str, Any]:
    tags: dict[str, Any] = _entry(name)["pretrained"]
    cleaned = tag.lower().replace("-", "_")  # open_clip's spelling of tags
    if cleaned not in tags:
        known = ", ".join(sorted(tags)) or "none"
        raise UnknownModelError(f"{name} has no pretrained tag {tag!r} (known: {known})")
    found: dict[str, Any] = tags[cleaned]
    return found


def architecture(name: str, pretrained: str | None = None) -> ClipArchitecture:
    """The architecture of the open_clip model ``name`` (with QuickGELU where the config or the
    pretrained tag was trained with it).

    Raises:
        UnknownModelError: no such architecture or tag in the catalogue.
        UnsupportedArchitecture: the builder does not cover it.
    """
    quick = bool(_tag(name, pretrained).get("quick_gelu", False)) if pretrained else False
    return from_open_clip_config(_entry(name)["config"], quick_gelu=quick, name=name)


def safetensors_name(filename: str) -> str:
    """The safetensors file open_clip looks for first in place of a checkpoint ``filename``
    (``""``: the hub's default file)."""
    if not filename or filename == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors"
    if filename.endswith((".bin", ".pth")):
        return filename[:-4] + ".safetensors"
    return filename


def pretrained_source(name: str, tag: str) -> tuple[str, str]:
    """``(hf_repo, filename)`` of the safetensors checkpoint of ``name``'s pretrained ``tag``.

    Raises:
        UnknownModelError: no such architecture or tag.
        ModelError: open_clip records no Hugging Face hub copy of these weights.
    """
    entry = _tag(name, tag)
    repo = entry.get("hf_hub") or ""
    if not repo:
        raise ModelError(f"{name} ({tag}): open_clip knows no Hugging Face hub copy of these weights; "
                         f"it {_HINT}")
    return str(repo), safetensors_name(str(entry.get("file") or ""))


def preprocess(name: str, tag: str | None = None) -> dict[str, Any]:
    """The image preprocessing of ``name`` with ``tag``'s weights (or open_clip's defaults), as
    ``PixelSpec.from_open_clip`` takes it: size, mean, std, interpolation, resize_mode."""
    vision = _entry(name)["config"].get("vision_cfg") or {}
    size = vision.get("image_size", _VISION_DEFAULTS["image_size"])
    out = {**PREPROCESS_DEFAULTS, **(_tag(name, tag).get("preprocess", {}) if tag else {})}
    out["size"] = list(size) if isinstance(size, (list, tuple)) else int(size)
    return out
