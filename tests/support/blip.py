"""Small BLIP models built locally, for tests and benchmarks (no download, random weights).

No pretrained caption or ITM model can be fetched in tests, so these builders write
real ``transformers`` checkpoints from a config: the tiny ones load through the
ordinary ``from_pretrained`` path in well under a second, and the base-sized ones
have exactly the shapes (and so the cost) of BLIP base.  Their captions are
gibberish; what they exercise is the code path, the storage and the timing.

Needs the ``caption`` extra (transformers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["BASE_VOCAB_SIZE", "blip_config", "blip_processor", "write_tiny_blip", "write_tiny_git", "write_vocab"]

# BERT base uncased (30522) plus BLIP's [DEC] and [ENC]: the text side of every BLIP checkpoint.
BASE_VOCAB_SIZE = 30524

# Our own small WordPiece vocabulary: the specials BLIP needs, then words for shape scenes.
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
_WORDS = (
    "a an the of in on with and is photo picture image there two three small large big "
    "red green blue yellow black white orange purple circle square triangle star shape shapes "
    "background dog cat car tree sky"
).split()
_PIECES = ["##s", "##es", "##ed", "##ing", "##er"]
_PUNCT = list(".,!?-")


def write_vocab(path: Path, size: int | None = None) -> list[str]:
    """Write a BERT ``vocab.txt``; with ``size``, padded with ``[unusedN]`` tokens to exactly that many."""
    tokens = _SPECIALS + _PUNCT + _WORDS + _PIECES
    if size is not None:
        tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def _special_ids(tokens: list[str]) -> dict[str, int]:
    return {
        "pad_token_id": tokens.index("[PAD]"), "bos_token_id": tokens.index("[DEC]"),
        "sep_token_id": tokens.index("[SEP]"), "eos_token_id": tokens.index("[SEP]"),
    }


def blip_config(size: str, tokens: list[str]) -> Any:
    """A ``BlipConfig``: ``"tiny"`` (32-px images, 2 layers of width 32) or ``"base"`` (BLIP base's shapes)."""
    from transformers import BlipConfig

    ids = _special_ids(tokens)
    # BLIP initialises its vision tower at std 1e-10 (real weights come from a checkpoint).  Such
    # weights make images indistinguishable and, on CPUs, denormal activations that run many times
    # slower than real weights do: random models here use BERT's 0.02 everywhere.
    if size == "base":
        return BlipConfig(text_config={"vocab_size": len(tokens), **ids}, vision_config={"initializer_range": 0.02})
    if size != "tiny":
        raise ValueError(f"size must be 'tiny' or 'base', not {size!r}")
    return BlipConfig(
        text_config={"vocab_size": len(tokens), "hidden_size": 32, "encoder_hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 64, **ids},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "initializer_range": 0.02},
        projection_dim=32, image_text_hidden_size=32,
    )


def blip_processor(vocab_file: Path, image_size: int) -> Any:
    """A ``BlipProcessor`` over ``vocab_file`` (lower-casing BERT WordPiece) at ``image_size`` px."""
    from transformers import BertTokenizer, BlipImageProcessor, BlipProcessor

    tokenizer = BertTokenizer(str(vocab_file), do_lower_case=True, bos_token="[DEC]",
                              additional_special_tokens=["[ENC]"], model_max_length=64)
    images = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)


def write_tiny_blip(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny BLIP captioner and a tiny BLIP ITM model below ``folder``; returns their folders.

    Each folder holds ``config.json``, ``model.safetensors`` and the processor
    files, as a hub download would, so ``load_captioner(path)`` and
    ``load_itm(path)`` read them like any local checkpoint.  Same seed, same weights.
    """
    import torch
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    vocab = root / "vocab.txt"
    tokens = write_vocab(vocab)
    processor = blip_processor(vocab, image_size=32)
    out = []
    for name, cls in (("caption", BlipForConditionalGeneration), ("itm", BlipForImageTextRetrieval)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(blip_config("tiny", tokens))
        model.eval()
        target = root / f"tiny-blip-{name}"
        model.save_pretrained(target)
        processor.save_pretrained(target)
        out.append(target)
    return out[0], out[1]


def write_tiny_git(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny GIT captioner (``GitForCausalLM``, another image-to-text family) to ``folder``."""
    import torch
    from transformers import BertTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    vocab = target / "vocab.txt"
    tokens = write_vocab(vocab)
    config = GitConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8, "projection_dim": 32},
        vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, bos_token_id=tokens.index("[CLS]"), eos_token_id=tokens.index("[SEP]"),
        pad_token_id=tokens.index("[PAD]"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GitForCausalLM(config).eval()
    tokenizer = BertTokenizer(str(vocab), do_lower_case=True, model_max_length=64)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(target)
    GitProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(target)
    return target
