"""SAM2's two-way transformer for a batch of prompts on ONE image, with the image's own work done once.

`sam2.modeling.sam.transformer.TwoWayTransformer.forward` takes the image embedding repeated once per prompt
(`predict_masks(repeat_image=True)`), so in its first block three projections of the image tokens (the keys and
values that the tokens attend to, and the queries of the image attending back) run B times on B identical copies, as
does the repeat itself. Here they run once and are broadcast; the first block's outputs (and so everything after it)
differ per prompt, so the other blocks run as sam2's do, with sam2's own modules and weights. On a CPU the outputs
are bit-identical to sam2's for batches of two prompts or more (tests/test_sam2_exact_speedups.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _attend(attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sam2 `Attention.forward` after its three input projections (q, k, v already projected)."""
    heads = attention.num_heads
    q, k, v = (attention._separate_heads(x, heads) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return attention.out_proj(attention._recombine_heads(out))


def _project_as_a_batch(linear: torch.nn.Linear, tokens: torch.Tensor) -> torch.Tensor:
    """`linear(tokens)` for [1, h·w, C] image tokens, computed as sam2's batch of B > 1 permuted (non-contiguous)
    copies is: copied contiguous, one matrix product, then the bias (F.linear on a single contiguous input fuses the
    bias into the product instead, which rounds differently). The same operations give the same bits on a CPU."""
    return torch.matmul(tokens.contiguous(), linear.weight.t()) + linear.bias


def two_way_one_image(transformer, image: torch.Tensor, image_pe: torch.Tensor,
                      tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`transformer(image.expand(B), image_pe.expand(B), tokens)` for image [1, C, h, w], image_pe [1, C, h, w] and
    tokens [B, N, C]: (queries [B, N, C], keys [B, h·w, C]) as sam2 returns them."""
    batch = tokens.shape[0]
    keys = image.flatten(2).permute(0, 2, 1)  # [1, h·w, C]
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    first, *others = transformer.layers
    if not first.skip_first_layer_pe:  # every SAM2 decoder skips it; anything else goes the plain way
        return transformer(image.expand(batch, -1, -1, -1), image_pe.expand(batch, -1, -1, -1), tokens)

    # first block, as TwoWayAttentionBlock.forward with skip_first_layer_pe, the image-only projections done once
    queries = first.norm1(first.self_attn(q=tokens, k=tokens, v=tokens))
    keys_with_pe = keys + key_pe
    to_image = first.cross_attn_token_to_image
    shared_k = _project_as_a_batch(to_image.k_proj, keys_with_pe).expand(batch, -1, -1)
    shared_v = _project_as_a_batch(to_image.v_proj, keys).expand(batch, -1, -1)
    queries = first.norm2(queries + _attend(to_image, to_image.q_proj(queries + tokens), shared_k, shared_v))
    queries = first.norm3(queries + first.mlp(queries))
    to_tokens = first.cross_attn_image_to_token
    shared_q = _project_as_a_batch(to_tokens.q_proj, keys_with_pe).expand(batch, -1, -1)
    tokens_with_pe = queries + tokens
    keys = first.norm4(keys + _attend(to_tokens, shared_q, to_tokens.k_proj(tokens_with_pe),
                                      to_tokens.v_proj(queries)))

    for layer in others:  # per prompt from here on
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
    attn_out = transformer.final_attn_token_to_image(q=queries + tokens, k=keys + key_pe, v=keys)
    return transformer.norm_final_attn(queries + attn_out), keys
