"""A model's ONNX towers without torch: shipped inside the package, or built from a checkpoint's tensors.

The core install runs every model under ONNX Runtime.  Where its graphs come from:

* **shipped**: a built-in model (``tiny-shapes``) carries its fp32 image tower as
  ``image.onnx`` beside its weights (written by ``scripts/export_builtin_towers.py``, checked
  against torch by ``tests/test_towers.py``); its text tower is an open_clip text transformer
  and is built from its checkpoint like any other;
* **built**: an open_clip ViT whose weights are a safetensors file (a pretrained tag downloaded
  from the Hugging Face hub, ``--pretrained FILE.safetensors``, ``local-dir:`` or ``hf-hub:``)
  has both towers written by :mod:`searchindex.models.graphs` from its tensors read as NumPy;
* anything else (a ResNet or timm tower, SigLIP, a ``.bin`` pickle, random weights) needs the
  torch extra, which exports the towers with ``torch.onnx`` (:mod:`.onnx`).

Built graphs live in the shared model cache under the same names as exported ones
(:func:`searchindex.models.onnx.model_cache_dir`), so a text tower made either way serves
searches.  Local weight files are recorded by SHA-256 with the index; they are checked here
before any tower is made or used, so a file changed in place is refused, never mixed in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError, ModelError, WeightsUnavailableError
from . import onnx as onnx_models
from .cache import KEY_FORMAT, cache_root, package_version, write_atomic
from .onnx import OnnxTextEncoder, onnx_paths
from .spec import CHECKPOINT_NAME, HUB, ModelSpec, builtin_models, offline_help, sha256_file

if TYPE_CHECKING:
    from .pixels import PixelSpec  # imports Pillow: only where pixels are made (a text search makes none)

__all__ = ["Towers", "checked_checkpoint", "make_towers", "needs_torch", "pixel_spec_of", "text_encoder",
           "torch_available", "torchless", "verify_weights"]

log = logging.getLogger(__name__)

#: The file name of a shipped built-in model's image tower.
SHIPPED_IMAGE = "image.onnx"
_SAFETENSORS = "open_clip_model.safetensors"
_CONFIG = "open_clip_config.json"
# Bump when the builder's graphs change: towers built under an older format are built again.
_BUILD_FORMAT = 1


def torch_available() -> bool:
    """Whether the torch extra (torch and open_clip) is installed; nothing is imported."""
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("open_clip") is not None


@dataclass(frozen=True)
class Towers:
    """A model's fp32 ONNX graphs and what using them needs."""

    image: Path
    text: Path
    dim: int
    image_size: int
    context_length: int
    pixel_spec: PixelSpec
    source: str  # "shipped" or "built"


# --- which weights, which architecture --------------------------------------------------------


def _model_config(spec: ModelSpec) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """(open_clip model config, preprocessing config or None, quick_gelu forced) of ``spec``,
    without downloading anything but a hub model's small config file."""
    from . import architectures

    builtins = builtin_models()
    if spec.model in builtins:
        cfg = json.loads((builtins[spec.model] / _CONFIG).read_text())
        return cfg["model_cfg"], cfg.get("preprocess_cfg"), False
    if spec.pretrained == "local-dir":
        cfg = json.loads((Path(spec.model.split(":", 1)[1]) / _CONFIG).read_text())
        return cfg["model_cfg"], cfg.get("preprocess_cfg"), False
    if spec.pretrained == "hf-hub":
        cfg = json.loads(Path(_hub_file(spec.model.split(":", 1)[1], _CONFIG, spec)).read_text())
        return cfg["model_cfg"], cfg.get("preprocess_cfg"), False
    entry = architectures.catalogue()["models"].get(spec.model)
    if entry is None:
        raise KeyError(spec.model)
    tag = spec.pretrained if spec.pretrained in entry["pretrained"] else None
    # A tag trained with QuickGELU under an architecture name without "-quickgelu" (ViT-B-32 openai) runs
    # GELU here, as open_clip builds it from that name (it only warns): the vectors of an index must not
    # depend on which install encoded them.  The "-quickgelu" names get QuickGELU from their config.
    return entry["config"], architectures.preprocess(spec.model, tag), False


def _text_architecture(model_cfg: dict[str, Any], quick_gelu: bool, name: str) -> Any:
    """The text half of a config (its image tower may be one the builder does not cover, as
    ``tiny-shapes``' ResNet is: the image fields are then open_clip's defaults, unused)."""
    from .architectures import from_open_clip_config

    return from_open_clip_config({**model_cfg, "vision_cfg": {}}, quick_gelu=quick_gelu, name=name)


def _weights_are_safetensors(spec: ModelSpec) -> bool:
    from . import architectures

    if spec.pretrained == "none":
        return False
    if spec.pretrained == "local-dir":
        return any(Path(spec.model.split(":", 1)[1]).glob("*.safetensors"))
    if spec.pretrained == "hf-hub":
        return True  # open_clip's hub repos hold open_clip_model.safetensors
    entry = architectures.catalogue()["models"].get(spec.model)
    if entry is not None and spec.pretrained in entry["pretrained"]:
        return bool(entry["pretrained"][spec.pretrained].get("hf_hub"))
    return spec.pretrained.endswith(".safetensors")


def torchless(spec: ModelSpec) -> bool:
    """Whether ``spec``'s towers can be had without torch: shipped, or built from safetensors weights
    of an architecture the builder covers.  Reads configs only; downloads nothing but a hub config."""
    from .architectures import UnsupportedArchitecture, from_open_clip_config

    if not onnx_models.onnx_available(export=True):  # an environment without ONNX Runtime: torch or nothing
        return False
    builtins = builtin_models()
    shipped = spec.model in builtins
    if shipped and not (spec.pretrained != "none" and (builtins[spec.model] / SHIPPED_IMAGE).is_file()):
        return False
    if not shipped and not _weights_are_safetensors(spec):
        return False
    try:
        model_cfg, _, quick = _model_config(spec)
        _text_architecture(model_cfg, quick, spec.model)
        if not shipped:
            from_open_clip_config(model_cfg, quick_gelu=quick, name=spec.model)
    except (UnsupportedArchitecture, KeyError, OSError, ValueError) as exc:
        log.debug("%s is not built without torch: %s", spec.describe(), exc)
        return False
    return True


def needs_torch(spec: ModelSpec, what: str = "") -> MissingExtraError:
    """The one-line error for a model (or a use of it) only the torch extra can run."""

    why = what or (
        "random weights" if spec.pretrained == "none"
        else "its architecture or weights file (only open_clip ViTs with safetensors weights run without it)"
    )
    return MissingExtraError(f"{spec.describe()} needs torch for {why}", extra="torch")


# --- weight files -----------------------------------------------------------------------------


def _memo_path() -> Path:
    return cache_root() / "weights-sha256.json"


def _digest(path: Path) -> str:
    """SHA-256 of a weights file, remembered by (path, size, mtime, inode) so that checking a
    600 MB checkpoint costs its hash once, not on every open."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(_memo_path().read_text())
        if isinstance(loaded, dict):
            memo = {str(k): str(v) for k, v in loaded.items()}
    if key in memo:
        return memo[key]
    digest = sha256_file(path)
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path.resolve()}|")}
    memo[key] = digest
    with contextlib.suppress(OSError):
        _memo_path().parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_memo_path(), lambda tmp: Path(tmp).write_text(json.dumps(memo)))
    return digest


def _local_weights(spec: ModelSpec) -> Path | None:
    """The local weights file ``spec`` names (built-in, ``local-dir:`` or a checkpoint path), else None."""
    builtins = builtin_models()
    if spec.model in builtins:
        return builtins[spec.model] / CHECKPOINT_NAME
    if spec.pretrained == "local-dir":
        folder = Path(spec.model.split(":", 1)[1])
        found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt*"))
        return found[0] if found else None
    if spec.checkpoint_sha256:
        return Path(spec.pretrained)
    return None


def verify_weights(spec: ModelSpec) -> None:
    """Check that a local weights file recorded with an index is still the file it was built with.

    Raises:
        WeightsUnavailableError: the file is gone, or its SHA-256 differs from the recorded one (changed in
            place): encoding with it would mix vectors of two models in one index.
    """
    path = _local_weights(spec)
    if path is None or not spec.checkpoint_sha256 or spec.pretrained == "none":
        return
    if not path.is_file():
        raise WeightsUnavailableError(f"the weights file {path} recorded with this index no longer exists")
    actual = _digest(path)
    if actual != spec.checkpoint_sha256:
        raise WeightsUnavailableError(
            f"the weights file {path} changed since this index was built (sha256 {actual[:12]} != "
            f"{spec.checkpoint_sha256[:12]}); vectors of different weights cannot be mixed: "
            "`searchindex reindex --model ... --pretrained ...` re-encodes the index with the new file"
        )


def _hub_cache_copy(repo: str, filename: str) -> Path | None:
    """``filename`` of hub repository ``repo`` when a download already holds it: this package's weights cache,
    or the Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``) that
    huggingface_hub and open_clip fill."""
    ours = cache_root() / "weights" / repo.replace("/", "--") / filename
    if ours.is_file():
        return ours
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    folder = Path(hub) / f"models--{repo.replace('/', '--')}"
    with contextlib.suppress(OSError):
        revision = (folder / "refs" / "main").read_text().strip()
        found = folder / "snapshots" / revision / filename
        if found.is_file():
            return found
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_file(repo: str, filename: str, spec: ModelSpec) -> str:
    """One file of a Hugging Face hub repository: from a cache, else downloaded once (quietly, failing fast).

    A plain HTTPS download into this package's cache (``weights/``), honouring ``HF_ENDPOINT``,
    ``HF_TOKEN`` and ``HF_HUB_OFFLINE``; files that huggingface_hub or open_clip downloaded before are
    used where they lie.  Not huggingface_hub itself: it and what it brings (hf_xet, fsspec, httpx, ...)
    would put 28 MB more into the core install, which is kept under 350 MB.

    Raises:
        WeightsUnavailableError: offline, hub unreachable, or the file is not there; one line that says
            what to do instead.
    """
    url = f"{(os.environ.get('HF_ENDPOINT') or HUB).rstrip('/')}/{repo}/resolve/main/{filename}"
    cached = _hub_cache_copy(repo, filename)
    if cached is not None:
        return str(cached)
    if _offline():
        raise WeightsUnavailableError(f"the weights of {spec.describe()} were not downloaded before and "
                                      "HF_HUB_OFFLINE is set" + offline_help(url))
    try:
        return _download(url, cache_root() / "weights" / repo.replace("/", "--") / filename, spec)
    except Exception as exc:  # every failure (no network, 404, disk) is the same to a user: say what to do
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise WeightsUnavailableError(
            f"could not download the weights of {spec.describe()}: {reason}" + offline_help(url)
        ) from None


def _download(url: str, target: Path, spec: ModelSpec) -> str:
    """``url`` into ``target`` through a temporary file beside it (a cut download never looks complete)."""
    import urllib.error
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "searchindex"})
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # One try with a short connect timeout: a machine without a network answers in seconds.
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (https hub URL)
            size = int(response.headers.get("Content-Length") or 0)
            # Said once the hub answers (offline, the error alone is the one line a user sees).
            log.warning("downloading the weights of %s (%s) once from %s", spec.describe(),
                        f"{size / 1e6:.0f} MB" if size else "size unknown", url)
            write_atomic(target, lambda tmp: _copy_stream(response, tmp))
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    return str(target)


def _copy_stream(response: Any, tmp: str) -> None:
    with open(tmp, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def checked_checkpoint(spec: ModelSpec) -> Path:
    """The safetensors weights file of ``spec``: local (checked against its recorded SHA-256) or downloaded.

    Raises:
        WeightsUnavailableError: not downloadable, missing, or changed since the index was built.
        MissingExtraError: a pickled checkpoint, which only torch reads.
    """
    from . import architectures

    local = _local_weights(spec)
    if local is not None:
        verify_weights(spec)
        if local.suffix != ".safetensors":
            raise needs_torch(spec, f"the pickled checkpoint {local.name} (a .safetensors file needs no torch)")
        return local
    if spec.pretrained == "hf-hub":
        return Path(_hub_file(spec.model.split(":", 1)[1], _SAFETENSORS, spec))
    repo, filename = architectures.pretrained_source(spec.model, spec.pretrained)
    return Path(_hub_file(repo, filename, spec))


def pixel_spec_of(spec: ModelSpec) -> PixelSpec:
    """The input ``spec``'s model wants, from its config and pretrained tag (no weights loaded)."""
    from .pixels import PixelSpec

    builtins = builtin_models()
    if spec.model in builtins and (builtins[spec.model] / "towers.json").is_file():
        return PixelSpec.from_json(json.loads((builtins[spec.model] / "towers.json").read_text())["pixel_spec"])
    from .architectures import PREPROCESS_DEFAULTS

    model_cfg, pre, _ = _model_config(spec)
    vision = model_cfg.get("vision_cfg", {})
    size = (pre or {}).get("size") or vision.get("image_size", 224)
    cfg = {**PREPROCESS_DEFAULTS, "size": size}
    cfg.update({k: v for k, v in (pre or {}).items() if v is not None})
    if isinstance(cfg["size"], list):
        cfg["size"] = tuple(cfg["size"])
    pixel_spec = PixelSpec.from_open_clip(cfg)
    if pixel_spec is None:
        raise needs_torch(spec, "its preprocessing")
    return pixel_spec


# --- making the towers ------------------------------------------------------------------------


def _ident(spec: ModelSpec) -> dict[str, Any]:
    return {"build_format": _BUILD_FORMAT, "key_format": KEY_FORMAT, "onnx": package_version("onnx"),
            "model": spec.model, "pretrained": spec.pretrained, "sha256": spec.checkpoint_sha256}


def make_towers(spec: ModelSpec) -> Towers:
    """``spec``'s fp32 ONNX towers: shipped, or built from its checkpoint now (once; then kept in the cache).

    Raises:
        MissingExtraError: only torch can make them (see :func:`torchless`).
        WeightsUnavailableError: the weights cannot be had or changed since the index was built.
        ModelError: the checkpoint does not fit its architecture.
    """
    if not torchless(spec):
        raise needs_torch(spec)
    from .architectures import from_open_clip_config

    model_cfg, _, quick = _model_config(spec)
    pixel_spec = pixel_spec_of(spec)
    text_arch = _text_architecture(model_cfg, quick, spec.model)
    image_file, image_sidecar = onnx_paths(spec, "image")
    text_file, text_sidecar = onnx_paths(spec, "text")
    builtins = builtin_models()
    shipped = spec.model in builtins
    if shipped:
        verify_weights(spec)
        image_file = builtins[spec.model] / SHIPPED_IMAGE
        facts = json.loads((builtins[spec.model] / "towers.json").read_text())
        if facts.get("checkpoint_sha256") != spec.checkpoint_sha256:
            raise WeightsUnavailableError(
                f"the shipped image tower of {spec.model} was made from other weights than this index records"
            )
    ident = _ident(spec)
    wanted = [(text_file, text_sidecar)] + ([] if shipped else [(image_file, image_sidecar)])
    if not all(_current(f, s, ident) for f, s in wanted):
        from .graphs import build_image_graph, build_text_graph, read_checkpoint

        weights = read_checkpoint(checked_checkpoint(spec))
        text_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not _current(text_file, text_sidecar, ident):
                build_text_graph(text_arch, weights, text_file)
                _write_sidecar(text_sidecar, ident, spec, {
                    "context_length": text_arch.context_length, "dim": text_arch.embed_dim,
                    "tokenizer": "clip-bpe", "any_length": True})
            if not shipped and not _current(image_file, image_sidecar, ident):
                arch = from_open_clip_config(model_cfg, quick_gelu=quick, name=spec.model)
                build_image_graph(arch, weights, image_file)
                _write_sidecar(image_sidecar, ident, spec, {"image_size": max(arch.image_size), "dim": arch.embed_dim})
        except KeyError as exc:
            raise ModelError(f"the checkpoint of {spec.describe()} lacks the tensor {exc} its architecture needs") \
                from None
        log.info("built the ONNX towers of %s from its checkpoint in %s", spec.describe(), text_file.parent)
    return Towers(image=image_file, text=text_file, dim=text_arch.embed_dim,
                  image_size=max(pixel_spec.height, pixel_spec.width), context_length=text_arch.context_length,
                  pixel_spec=pixel_spec, source="shipped" if shipped else "built")


def _current(model_file: Path, sidecar: Path, ident: dict[str, Any]) -> bool:
    try:
        facts = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return facts.get("ident") == ident and model_file.is_file() and "error" not in facts


def _write_sidecar(sidecar: Path, ident: dict[str, Any], spec: ModelSpec, facts: dict[str, Any]) -> None:
    record = {"format": KEY_FORMAT, "ident": ident, "model": spec.describe(), "source": "built", **facts}
    write_atomic(sidecar, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))


def text_encoder(spec: ModelSpec) -> OnnxTextEncoder | None:
    """``spec``'s text tower under ONNX Runtime when it can be had without torch (built now if needed), else None."""
    if not torchless(spec):
        return None
    towers = make_towers(spec)
    return OnnxTextEncoder(towers.text, towers.context_length, towers.dim, trim=True)
