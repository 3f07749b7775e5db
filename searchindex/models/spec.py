"""Which model made an index's vectors: names, weights and their check, without importing torch.

:func:`resolve_model` validates a model name and weights choice and returns the
:class:`ModelSpec` an index records; built-in models ship inside this package
(``models/tiny-shapes/``).  Nothing here loads weights, and open_clip (seconds to
import: it pulls in torch, torchvision and transformers) is imported only the first time
an open_clip architecture name is checked with a given open_clip version: its list of
architectures and pretrained tags is then kept in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelMismatchError, UnknownModelError, WeightsUnavailableError
from .cache import cache_root, package_version, write_atomic

__all__ = [
    "CHECKPOINT_NAME", "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "HUB", "ModelSpec", "builtin_models", "offline_help",
    "open_clip_catalogue", "resolve_model", "sha256_file",
]

# ViT-B-32 at 256 px trained on DataComp-1B: the best zero-shot accuracy open_clip
# offers at ViT-B-32's CPU cost (about 72.8% ImageNet zero-shot vs 66.6% for
# laion2b ViT-B-32 at 224 px), with 32-px patches keeping encoding cheap on a laptop.
DEFAULT_MODEL = "ViT-B-32-256"
DEFAULT_PRETRAINED = "datacomp_s34b_b86k"

log = logging.getLogger(__name__)

_MODELS_DIR = Path(__file__).resolve().parent  # the shipped models sit beside this module
CHECKPOINT_NAME = "open_clip_model.safetensors"


def builtin_models() -> dict[str, Path]:
    """searchindex's own shipped models: name -> open_clip 'local-dir' folder."""
    return {p.name: p for p in sorted(_MODELS_DIR.iterdir()) if (p / "open_clip_config.json").is_file()}


@dataclass(frozen=True)
class ModelSpec:
    """What made an index's vectors; recorded with the index and checked on open.

    Attributes:
        model: open_clip architecture (``ViT-B-32``), ``hf-hub:org/repo``, or a built-in
            searchindex model (``tiny-shapes``).
        pretrained: an open_clip pretrained tag, ``"none"`` (random weights),
            ``"builtin"`` (a shipped model), or the path of a local checkpoint file.
        checkpoint_sha256: SHA-256 of the weights file when it is local (built-in
            models and checkpoint files), so a different file with the same name is
            told apart.
    """

    model: str
    pretrained: str
    checkpoint_sha256: str | None = None

    def describe(self) -> str:
        digest = f" (sha256 {self.checkpoint_sha256[:12]})" if self.checkpoint_sha256 else ""
        return f"{self.model} / {self.pretrained}{digest}"

    def same_weights(self, other: ModelSpec) -> bool:
        """True when both specs produce the same vectors."""
        if self.model != other.model:
            return False
        if self.checkpoint_sha256 or other.checkpoint_sha256:
            return self.checkpoint_sha256 == other.checkpoint_sha256
        return self.pretrained == other.pretrained

    def require(self, model: str | None, pretrained: str | None) -> None:
        """Raise :class:`~searchindex.errors.ModelMismatchError` unless ``model``/``pretrained`` make the
        same vectors as this spec (``None`` for both: anything goes)."""
        if model is None and pretrained is None:
            return
        wanted = resolve_model(model or self.model, pretrained)
        if not wanted.same_weights(self):
            raise ModelMismatchError(
                f"this index was built with {self.describe()}, not {wanted.describe()}; "
                "vectors from different models cannot be mixed (`searchindex reindex --model ...` switches "
                "an index to another model)"
            )


#: Where pretrained tags are downloaded from (``HF_ENDPOINT`` overrides it, as for huggingface_hub).
HUB = "https://huggingface.co"


def offline_help(url: str) -> str:
    """What to do when weights cannot be downloaded: the end of a one-line error naming ``url``."""
    return (f" (tried {url}). Without internet access: `searchindex demo` or `--model tiny-shapes` work offline; "
            "or download the safetensors file elsewhere and pass `--pretrained FILE.safetensors`; "
            "HF_HUB_OFFLINE=1 uses only weights downloaded before")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(model: str | None = None, pretrained: str | None = None) -> ModelSpec:
    """Check a model name and weights choice and return the spec to record.

    Does not load weights (that may need a download); it does validate names and
    hash local checkpoint files.

    Raises:
        UnknownModelError: the name is not a built-in model or open_clip architecture.
        WeightsUnavailableError: a checkpoint path does not exist, or the model has
            no pretrained tag to default to.
    """
    model = model or DEFAULT_MODEL
    if model == DEFAULT_MODEL and pretrained is None:
        pretrained = DEFAULT_PRETRAINED
    builtins = builtin_models()
    if model in builtins:
        if pretrained not in (None, "builtin", "none"):
            raise ModelError(f"'{model}' is a built-in model with its own weights; do not pass --pretrained")
        if pretrained == "none":
            return ModelSpec(model, "none")
        return ModelSpec(model, "builtin", sha256_file(builtins[model] / CHECKPOINT_NAME))

    if model.startswith("hf-hub:"):
        return ModelSpec(model, "hf-hub")
    if model.startswith("local-dir:"):
        folder = Path(model.split(":", 1)[1])
        if not (folder / "open_clip_config.json").is_file():
            raise UnknownModelError(f"{folder} has no open_clip_config.json")
        ckpts = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt*"))
        return ModelSpec(f"local-dir:{folder.resolve()}", "local-dir", sha256_file(ckpts[0]) if ckpts else None)
    architectures = open_clip_catalogue()
    if model not in architectures:
        import difflib

        by_lower = {m.lower(): m for m in architectures}
        close = [by_lower[m] for m in difflib.get_close_matches(model.lower().replace("/", "-"), by_lower, n=6)]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise UnknownModelError(
            f"Unknown model '{model}'.{hint} Built-in: {', '.join(builtins)}; "
            "see open_clip.list_models() for every architecture."
        )
    tags = architectures[model]
    if pretrained is None:
        if not tags:
            raise WeightsUnavailableError(
                f"{model} has no published pretrained weights; pass --pretrained PATH or --pretrained none"
            )
        pretrained = tags[0]
    if pretrained == "none" or pretrained in tags:
        return ModelSpec(model, pretrained)
    path = Path(pretrained).expanduser()
    if path.is_file():
        return ModelSpec(model, str(path.resolve()), sha256_file(path))
    raise WeightsUnavailableError(
        f"'{pretrained}' is neither a pretrained tag of {model} ({', '.join(tags) or 'none published'}) "
        "nor an existing checkpoint file"
    )


def open_clip_catalogue() -> dict[str, list[str]]:
    """open_clip's architectures and the pretrained tags of each, in open_clip's order.

    Without open_clip (the core install), from the catalogue that ships with this package
    (:mod:`.architectures`).  Otherwise read from open_clip itself when it is already imported or
    when the cache folder has no copy for the installed open_clip version (then the copy is
    written); otherwise from that copy, so that checking a name does not cost the seconds of
    importing open_clip.
    """
    import importlib.util

    version = package_version("open_clip_torch")
    if version == "-" or importlib.util.find_spec("open_clip") is None:  # the core install: the shipped copy
        from .architectures import catalogue as shipped

        return {name: list(entry["pretrained"]) for name, entry in shipped()["models"].items()}
    copy = cache_root() / "open_clip" / f"catalogue-{version}.json"
    if "open_clip" not in sys.modules and version != "-":
        try:
            data: Any = json.loads(copy.read_text())
            if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
                return data
        except (OSError, ValueError):
            pass  # none yet, or unreadable: ask open_clip
    import open_clip

    catalogue = {m: list(open_clip.list_pretrained_tags_by_model(m)) for m in open_clip.list_models()}
    if version != "-":
        try:
            copy.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(copy, lambda tmp: Path(tmp).write_text(json.dumps(catalogue)))
        except OSError as exc:  # a read-only cache only costs the import next time
            log.debug("cannot keep open_clip's catalogue in %s: %s", copy, exc)
    return catalogue
