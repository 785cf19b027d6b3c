"""Cross-attention keys and values per prompt, for the prepared (inference) model.

The backbone's cross-attention context is the task's text tokens plus one
proprio token. The text is fixed for a task while the proprio token changes
every control step; every context token goes through the condition embedder's
text projection, then per block through `to_k` + `norm_k` (RMS over the token's
own features) and `to_v`, all per token. So the text part of each block's K/V
is computed once per prompt, and a step computes only the proprio token's.
Attention has no mask and no position over keys, so cached text K/V followed by
the step's proprio K/V give the same output as the full context.

Inference only: `PromptKV(model)` swaps the blocks' cross-attention processors
of a model prepared with `for_inference()`; the training path never sees it.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

from model.light_wam import LightWAM


class CachedCrossAttnProcessor(WanAttnProcessor):
    """WanAttnProcessor for cross-attention whose keys/values start with `self.key`/`self.value` when set."""

    def __init__(self) -> None:
        super().__init__()
        self.key: torch.Tensor | None = None  # [B, L, heads, head_dim]
        self.value: torch.Tensor | None = None
        self.active = False
        self.prompt: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the text (and mask) key/value are for

    def __call__(self, attn: WanAttention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, rotary_emb=None) -> torch.Tensor:
        if not self.active:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key, value = kv(attn, encoder_hidden_states)
        key, value = torch.cat([self.key, key], dim=1), torch.cat([self.value, value], dim=1)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


def kv(attn: WanAttention, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-attention keys (normed) and values of embedded context tokens: [B, L, heads, head_dim] each."""
    key = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
    return key, attn.to_v(context).unflatten(2, (attn.heads, -1))


class PromptKV:
    """`predict_actions(batch)` like `LightWAM.predict_actions`, with the text's K/V kept per prompt."""

    def __init__(self, model: LightWAM) -> None:
        if not model.inference_only:
            raise ValueError("PromptKV needs a model prepared with for_inference() (it changes its processors)")
        self.model = model
        self.blocks = list(model.backbone.dit.blocks)
        for block in self.blocks:
            if block.attn2.add_k_proj is not None or block.attn2.fused_projections:
                raise ValueError("PromptKV: image-conditioned or fused cross-attention is not supported")
            if not isinstance(block.attn2.processor, CachedCrossAttnProcessor):  # shared by every PromptKV of the model
                block.attn2.set_processor(CachedCrossAttnProcessor())

    def set_prompt(self, text: torch.Tensor, text_mask: torch.Tensor | None = None) -> None:
        """Compute every block's text K/V for `text` [B, L, text_dim] (kept when it is the same prompt again)."""
        held = self.blocks[0].attn2.processor.prompt
        if held is not None and _same(held[0], text) and _same(held[1], text_mask):
            return
        bb = self.model.backbone
        dtype = next(bb.parameters()).dtype
        masked = text.to(dtype) if text_mask is None else text.to(dtype) * text_mask[..., None].to(dtype)
        embedded = bb.dit.condition_embedder.text_embedder(masked)
        for block in self.blocks:
            proc = block.attn2.processor
            proc.key, proc.value = kv(block.attn2, embedded)
            proc.prompt = (text.clone(), None if text_mask is None else text_mask.clone())

    @contextlib.contextmanager
    def active(self):
        """Within: the blocks' cross-attention takes the step's context tokens after the kept text K/V."""
        procs = [block.attn2.processor for block in self.blocks]
        for p in procs:
            p.active = True
        try:
            yield
        finally:
            for p in procs:
                p.active = False

    @torch.inference_mode()
    def predict_actions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalized action chunk [B, H, A] from `current_latent`, `text` (+ `text_mask`) and `proprio`."""
        model, bb = self.model, self.model.backbone
        self.set_prompt(batch["text"], batch.get("text_mask"))
        dtype = next(bb.parameters()).dtype
        latent = batch["current_latent"].to(dtype)
        proprio_token = bb.proprio_proj(batch["proprio"].to(dtype))[:, None]  # the step's only context token
        with self.active():
            fused, _ = bb(latent, proprio_token, None, truncate=True)
        return model.expert(fused, model.shortcut_offset(batch))


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.device == b.device and torch.equal(a, b)
