"""Exact single-frame encode of the Wan VAE with 2-D convolutions.

Wan's encoder reads frame 0 of a clip on its own. Every causal 3-D conv pads
time with 2*p zero slices in front, so for a one-frame input only the last time
slice of each kernel meets data: the result is a 2-D conv with `weight[:, :, -1]`.
The other layer kinds are per-frame already (RMS norm over channels, SiLU,
the 2-D spatial downsample, the VAE's per-frame attention), the temporal
downsample conv is skipped on the first chunk, and the Wan 2.2 average-pool
shortcut pads time with zeros. Running the one frame as 2-D tensors skips the
2/3 of each 3x3x3 conv's work that multiplies zeros, and the padding copies.

`encode_single_frame(vae, pixels)` equals `model.vae.encode(vae, pixels)` for
`pixels` [B, 3, 1, H, W] to float tolerance (tests/test_vae_single_frame.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders import autoencoder_kl_wan as wan
from torch import nn

from model.vae import _latent_stats


def _conv(conv: wan.WanCausalConv3d, x: torch.Tensor) -> torch.Tensor:
    """The causal conv's output for one frame: its kernel's last time slice as a 2-D conv."""
    if tuple(conv.dilation) != (1, 1, 1) or conv.groups != 1:
        raise ValueError(f"single-frame encode: conv {conv} has dilation/groups the 2-D path does not handle")
    pad_w, _, pad_h, _, pad_t, _ = conv._padding
    if pad_t != conv.kernel_size[0] - 1:
        raise ValueError(f"single-frame encode: conv {conv} is not causal with full time padding ({conv._padding})")
    weight = conv.weight[:, :, -1]
    return F.conv2d(x, weight, conv.bias, stride=conv.stride[1:], padding=(pad_h, pad_w))


def _rms(norm: wan.WanRMS_norm, x: torch.Tensor) -> torch.Tensor:
    """WanRMS_norm over channels of a [B, C, H, W] tensor (its gamma is shaped for 5-D input)."""
    low = x.dtype in (torch.float16, torch.bfloat16)
    normalized = F.normalize(x.float() if low else x, dim=1).to(x.dtype)
    bias = norm.bias if isinstance(norm.bias, torch.Tensor) else None
    out = normalized * (norm.scale * norm.gamma.reshape(1, -1, 1, 1))
    return out + bias.reshape(1, -1, 1, 1) if bias is not None else out


def _as_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a module that is per-frame already on the 5-D one-frame tensor it expects."""
    return module(x[:, :, None])[:, :, 0]


def _residual(block: wan.WanResidualBlock, x: torch.Tensor) -> torch.Tensor:
    h = _conv(block.conv_shortcut, x) if isinstance(block.conv_shortcut, wan.WanCausalConv3d) else x
    x = _conv(block.conv1, block.nonlinearity(_rms(block.norm1, x)))
    x = block.dropout(block.nonlinearity(_rms(block.norm2, x)))
    return _conv(block.conv2, x) + h


def _resample(block: wan.WanResample, x: torch.Tensor) -> torch.Tensor:
    if block.mode not in ("downsample2d", "downsample3d", "none"):
        raise ValueError(f"single-frame encode: resample mode {block.mode!r} is not an encoder layer")
    return block.resample(x)  # downsample3d's time conv only runs from the second chunk on


def _layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, wan.WanResidualBlock):
        return _residual(layer, x)
    if isinstance(layer, wan.WanAttentionBlock):
        return _as_frame(layer, x)
    if isinstance(layer, wan.WanResample):
        return _resample(layer, x)
    if isinstance(layer, wan.WanResidualDownBlock):  # Wan 2.2: the shortcut averages with a zero time slice
        shortcut = _as_frame(layer.avg_shortcut, x)
        for resnet in layer.resnets:
            x = _residual(resnet, x)
        if layer.downsampler is not None:
            x = _resample(layer.downsampler, x)
        return x + shortcut
    raise TypeError(f"single-frame encode: no 2-D rule for encoder layer {type(layer).__name__}")


def _encoder(enc: wan.WanEncoder3d, x: torch.Tensor) -> torch.Tensor:
    x = _conv(enc.conv_in, x)
    for layer in enc.down_blocks:
        x = _layer(layer, x)
    mid = enc.mid_block
    x = _residual(mid.resnets[0], x)
    for attn, resnet in zip(mid.attentions, mid.resnets[1:]):
        x = _residual(resnet, _as_frame(attn, x) if attn is not None else x)
    return _conv(enc.conv_out, enc.nonlinearity(_rms(enc.norm_out, x)))


@torch.no_grad()
def encode_single_frame(vae: AutoencoderKLWan, pixels: torch.Tensor) -> torch.Tensor:
    """pixels [B, 3, 1, H, W] in [-1, 1] -> normalized posterior-mean latents [B, z, 1, H/8, W/8]."""
    if pixels.ndim != 5 or pixels.shape[2] != 1:
        raise ValueError(f"encode_single_frame: pixels must be [B, 3, 1, H, W], got {tuple(pixels.shape)}")
    x = pixels.to(vae.dtype)
    if vae.config.patch_size is not None:
        x = wan.patchify(x, patch_size=vae.config.patch_size)
    h = _conv(vae.quant_conv, _encoder(vae.encoder, x[:, :, 0]))
    mu = h[:, : vae.config.z_dim, None]  # DiagonalGaussianDistribution.mode(): the mean half
    mean, std = _latent_stats(vae, mu)
    return (mu - mean) / std
