"""First-frame-causal self-attention for the Wan DiT.

diffusers 0.42's `WanTransformerBlock` calls its self-attention without a mask,
so the mask travels on the processor instead: `FirstFrameCausalProcessor` is the
library's `WanAttnProcessor` with a mask it reads when the caller passes none.
The blocks, projections, RoPE and q/k norms stay the library's own.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor


class FirstFrameCausalProcessor(WanAttnProcessor):
    """WanAttnProcessor plus `self.mask` (bool, True = may attend), set by the backbone per block call."""

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = self.mask
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def first_frame_causal_mask(num_frames: int, tokens_per_frame: int, device: torch.device) -> torch.Tensor:
    """[1, 1, N, N] bool: frame-0 queries see only frame-0 keys; later queries see every key.

    Frame 0 is the clean current observation; keeping it blind to the noised
    future makes its hidden states the same as in the single-frame action pass.
    """
    n = num_frames * tokens_per_frame
    is_first = torch.arange(n, device=device) < tokens_per_frame
    mask = ~(is_first[:, None] & ~is_first[None, :])
    return mask[None, None]
