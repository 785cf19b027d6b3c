"""The 2-D single-frame encode equals the Wan VAE's own encode of a one-frame clip."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKLWan

from model.config import VaeConfig
from model.vae import build_vae, compression, encode
from model.vae_single_frame import encode_single_frame
from pipeline.presets import PRESETS


def _wan22_tiny() -> AutoencoderKLWan:
    """Wan 2.2's layer kinds (patchified input, residual down blocks with average-pool shortcuts), tiny widths."""
    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, is_residual=True,
                            in_channels=12, out_channels=12, patch_size=2, temperal_downsample=[False, True, True],
                            latents_mean=[0.1] * 4, latents_std=[2.0] * 4).eval()


VAES = {
    "demo": lambda: build_vae(PRESETS["demo"]().cache.vae),
    # the paper's Wan 2.1 structure (dim_mult, res blocks, temporal downsamples), 8 base channels
    "paper-structure": lambda: build_vae(VaeConfig(base_dim=8)),
    "wan2.2-structure": _wan22_tiny,
    # 4x spatial / 4x temporal (cache.vae.dim_mult=[1,2,2] temporal_downsample=[true,true])
    "4x-spatial": lambda: build_vae(VaeConfig(base_dim=8, dim_mult=[1, 2, 2], temporal_downsample=[True, True])),
}


@pytest.mark.parametrize("name", list(VAES))
def test_single_frame_encode_equals_full_encode(name):
    vae = VAES[name]()
    pixels = torch.rand(2, 3, 1, 32, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    full = encode(vae, pixels)
    fast = encode_single_frame(vae, pixels)
    assert fast.shape == full.shape
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)
    # and it is the first latent frame of a longer clip: frame 0 never sees the later ones
    clip = torch.cat([pixels, torch.rand(2, 3, 4, 32, 64) * 2 - 1], dim=2)
    torch.testing.assert_close(fast, encode(vae, clip)[:, :, :1], rtol=1e-4, atol=1e-4)


def test_single_frame_encode_rejects_clips():
    with pytest.raises(ValueError, match=r"\[B, 3, 1, H, W\]"):
        encode_single_frame(VAES["demo"](), torch.zeros(1, 3, 5, 32, 32))


def test_vae_compression_follows_its_config():
    vae = VAES["4x-spatial"]()
    assert compression(VaeConfig(dim_mult=[1, 2, 2], temporal_downsample=[True, True])) == (4, 4)
    assert compression(dict(vae.config)) == (4, 4) and vae.config.scale_factor_spatial == 4
    assert encode(vae, torch.zeros(1, 3, 9, 32, 64)).shape == (1, 16, 3, 8, 16)
    with pytest.raises(ValueError, match="one temporal_downsample flag per level"):
        build_vae(VaeConfig(base_dim=8, dim_mult=[1, 2, 2]))
    with pytest.raises(ValueError, match="exactly two levels must halve time"):
        build_vae(VaeConfig(base_dim=8, dim_mult=[1, 2, 2], temporal_downsample=[False, True]))
