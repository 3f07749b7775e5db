"""CLIP's text tower on a query's real token count instead of the padded context (no torch at import).

open_clip's ``encode_text`` adds all 77 positional embeddings, so it needs 77 columns.
With a causal mask and end-of-text pooling, the padding after the end token cannot
change the vector, so the tower can run on the columns a batch uses: for a short
query, a fraction of the work.  Used by the torch encoder and by the ONNX export.
"""

from __future__ import annotations

from typing import Any

__all__ = ["short_text_forward", "supports_short_text", "trim_tokens"]


def trim_tokens(tokens: Any) -> Any:
    """Cut a token batch (numpy or torch) after its last end-of-text token.

    The end-of-text id is the largest in the vocabulary, so each row's argmax is where
    pooling reads (padding is id 0, which is also a real token, "!": zeros cannot tell).
    """
    return tokens[:, : int(tokens.argmax(axis=1).max()) + 1]


def supports_short_text(model: Any) -> bool:
    """True when ``model``'s text tower gives the same vector for any padding length.

    That holds for open_clip's ``CLIP`` text tower with a causal mask and end-of-text
    (argmax) pooling: no token attends to a later one, so the padding after the
    end-of-text token cannot change it, and pooling reads that token alone.
    """
    if not (
        all(hasattr(model, a) for a in ("token_embedding", "positional_embedding", "transformer", "ln_final"))
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "cls_emb", None) is None
        and getattr(model.transformer, "batch_first", False)
    ):
        return False
    from torch import nn

    for block in getattr(model.transformer, "resblocks", [None]):
        attn = getattr(block, "attn", None)
        if not (isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim
                and attn.in_proj_bias is not None and attn.bias_k is None and not attn.add_zero_attn
                and all(hasattr(block, a) for a in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
                and not hasattr(block, "ln_1_kv")):
            return False
    return True


def _block(block: Any, x: Any, mask: Any) -> Any:
    """One open_clip ``ResidualAttentionBlock`` (self-attention) with no sequence length baked in.

    The same arithmetic as ``nn.MultiheadAttention``, written with reshapes that leave the
    batch and length axes to the input, so an ONNX export traced at one length runs at any.
    """
    import torch.nn.functional as F  # noqa: N812

    attn = block.attn
    h = block.ln_1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.unflatten(-1, (3, attn.num_heads, -1))  # type: ignore[no-untyped-call]
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (n, heads, length, head_dim)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + block.ls_1(attn.out_proj(out.transpose(1, 2).flatten(2)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def short_text_forward(model: Any, tokens: Any) -> Any:
    """``model.encode_text(tokens, normalize=True)`` for tokens of any length up to the context.

    open_clip's own method adds all 77 positional embeddings, so it needs 77 columns;
    here positions and the causal mask are cut to the columns given.  Only for models
    where :func:`supports_short_text` holds (equal to the padded result to float
    rounding; ``tests/test_textpath.py`` checks it).
    """
    import torch

    length = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    mask = model.attn_mask[:length, :length].to(cast)
    for block in model.transformer.resblocks:
        x = _block(block, x, mask)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
    return torch.nn.functional.normalize(x, dim=-1)
