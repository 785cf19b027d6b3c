"""The model package on a tiny config: training, inference paths, the mask, counts, loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.backbone import WanBackbone, load_dit
from model.config import ModelConfig, Pooling
from model.light_wam import LightWAM, build_model
from pipeline.presets import demo, paper
from pipeline.summary import parameter_report


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls: one thread is fastest and does not fight the other processes on a shared box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**backbone) -> ModelConfig:
    cfg = demo().model
    cfg.backbone = dataclasses.replace(cfg.backbone, text_dim=32, ffn_dim=128, num_layers=4, adapter_layers=[1, 2], **backbone)
    cfg.expert = dataclasses.replace(cfg.expert, compress_dim=64, hidden_dim=64, step_embed_dim=32)
    cfg.action_horizon, cfg.action_dim, cfg.proprio_dim = 8, 3, 5
    return cfg


def tiny_batch(cfg: ModelConfig, b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = cfg.action_horizon
    return {
        "video_latents": torch.randn(b, 16, 3, 4, 8, generator=g),
        "video_frame_mask": torch.tensor([[True, True, True], [True, True, False]])[:b],
        "current_latent": torch.randn(b, 16, 1, 8, 16, generator=g),
        "text": torch.randn(b, 6, cfg.backbone.text_dim, generator=g),
        "text_mask": torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:b],
        "proprio": torch.rand(b, cfg.proprio_dim, generator=g) * 2 - 1,
        "actions": torch.rand(b, h, cfg.action_dim, generator=g) * 2 - 1,
        "action_mask": torch.arange(h)[None].expand(b, h) < torch.tensor([[h], [h - 3]])[:b],
    }


def randomize_lora(model: LightWAM, seed: int = 1) -> None:
    """peft starts LoRA B at zero, which would make merge tests vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_forward_backward_and_overfit_one_batch():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    batch = tiny_batch(cfg)
    out = model(batch)
    assert set(out) == {"loss", "video_loss", "action_loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    for part in ("lora_A", "adapters.", "expert.", "proprio_proj.", "proj_out."):
        grads = [p.grad for n, p in model.named_parameters() if part in n]
        assert grads and all(g is not None for g in grads), part

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        out = model(batch, generator=torch.Generator().manual_seed(0))  # same noise: a fixed objective
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), losses


def test_action_weighted_steps_limit_the_loss():
    cfg = tiny_config()
    cfg.action_weighted_steps = 2
    model = build_model(cfg)
    batch = tiny_batch(cfg)
    base = model(batch)["action_loss"]
    batch["actions"][:, 2:] += 10.0  # steps past k carry no loss
    assert torch.allclose(model(batch)["action_loss"], base)
    batch["actions"][:, 1] += 10.0
    assert model(batch)["action_loss"] > base + 1


def test_truncated_path_matches_full_forward():
    cfg = tiny_config()
    model = build_model(cfg).eval()
    randomize_lora(model)
    batch = tiny_batch(cfg)
    bb = model.backbone
    with torch.no_grad():
        ctx = bb.context(batch["text"], batch["proprio"], batch["text_mask"])
        fused_full, video = bb(batch["current_latent"], ctx, None, truncate=False)
        full = model.expert(fused_full)
    assert video is not None and video.shape == batch["current_latent"].shape
    torch.testing.assert_close(model.predict_actions(batch), full, rtol=0, atol=0)


def test_merged_lora_matches_unmerged():
    cfg = tiny_config(freeze=True)
    model = build_model(cfg).eval()
    batch = tiny_batch(cfg)
    no_lora = model.predict_actions(batch)
    randomize_lora(model)
    unmerged = model.predict_actions(batch)
    assert (unmerged - no_lora).abs().max() > 1e-3, "LoRA must change the output for this test to mean anything"
    model.backbone.merge_lora()
    torch.testing.assert_close(model.predict_actions(batch), unmerged, rtol=1e-4, atol=1e-5)
    model.backbone.unmerge_lora()
    model.for_inference()
    assert not model.backbone.lora_layers() and len(model.backbone.dit.blocks) == 3
    torch.testing.assert_close(model.predict_actions(batch), unmerged, rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="inference"):
        model(batch)


def test_a_backbone_without_lora_trains_its_own_weights_and_prepares_for_inference():
    cfg = tiny_config(freeze=False, lora_rank=0)
    model = build_model(cfg)
    batch = tiny_batch(cfg)
    assert not any("lora_" in n for n, _ in model.named_parameters()) and not model.backbone.lora_layers()
    model(batch)["loss"].backward()
    block = [(n, p.grad) for n, p in model.named_parameters() if n.startswith("backbone.dit.blocks.0.")]
    assert len(block) > 10 and all(g is not None and g.abs().sum() > 0 for _, g in block)
    model.eval()
    before = model.predict_actions(batch)
    model.for_inference()
    torch.testing.assert_close(model.predict_actions(batch), before, rtol=1e-4, atol=1e-5)


def _video_pass(bb: WanBackbone, video: torch.Tensor, ctx: torch.Tensor, causal: bool):
    """(last fused states [B, N, D], video prediction [B, 16, F, h, w]); frame 0 at t=0, the rest at t=700."""
    t = torch.cat([torch.zeros(video.shape[0], 8), torch.full((video.shape[0], 16), 700.0)], dim=1)
    with torch.no_grad():
        fused, pred = bb(video, ctx, t, first_frame_causal=causal)
    return fused[-1], pred


def test_first_frame_causal_mask():
    cfg = tiny_config()
    model = build_model(cfg).eval()
    bb, batch = model.backbone, tiny_batch(cfg)
    ctx = bb.context(batch["text"], batch["proprio"], batch["text_mask"])
    video = batch["video_latents"]  # 3 latent frames of 2x4 tokens each
    changed = video.clone()
    changed[:, :, 1:] = torch.randn_like(changed[:, :, 1:])
    (ha, pa), (hb, pb) = _video_pass(bb, video, ctx, True), _video_pass(bb, changed, ctx, True)
    # current frame: tokens and prediction unchanged by the future
    torch.testing.assert_close(ha[:, :8], hb[:, :8], rtol=0, atol=1e-6)
    torch.testing.assert_close(pa[:, :, 0], pb[:, :, 0], rtol=0, atol=1e-6)
    # future frames: changed
    assert (ha[:, 8:] - hb[:, 8:]).abs().max() > 1e-2 and (pa[:, :, 1:] - pb[:, :, 1:]).abs().max() > 1e-2
    # without the mask the current frame does see the future (so the check above can fail)
    (hc, _), (hd, _) = _video_pass(bb, video, ctx, False), _video_pass(bb, changed, ctx, False)
    assert (hc[:, :8] - hd[:, :8]).abs().max() > 1e-3
    # the masked current frame equals a single-frame pass on that frame
    with torch.no_grad():
        alone, _ = bb(video[:, :, :1], ctx, torch.zeros(2, 8))
    torch.testing.assert_close(alone[-1], ha[:, :8], rtol=1e-4, atol=1e-5)


def test_paper_trainable_count_on_meta():
    with torch.device("meta"):
        model = LightWAM(paper().model)
    report = parameter_report(model)
    assert abs(report["trainable_total"] - 441.03e6) / 441.03e6 < 0.002
    want = {"expert": 351.03, "lora": 87.49, "adapters": 2.37, "video_head": 0.10, "proprio": 0.04}
    for part, millions in want.items():
        assert abs(report["trainable"][part] / 1e6 - millions) < max(0.002 * millions, 0.005), part
    assert set(report["trainable"]) == set(want)
    assert abs(report["frozen"]["dit"] - 1.42e9) / 1.42e9 < 0.01


def test_mean_pooling_ablation_runs():
    cfg = tiny_config()
    cfg.expert.pooling = Pooling.mean
    model = build_model(cfg)
    assert model.predict_actions(tiny_batch(cfg)).shape == (2, cfg.action_horizon, cfg.action_dim)


def test_local_pretrained_directory_loads(tmp_path):
    cfg = tiny_config(seed=7)
    saved = load_dit(cfg.backbone)
    saved.save_pretrained(tmp_path / "transformer")
    cfg.backbone.pretrained_path = str(tmp_path)
    cfg.backbone.seed = 123  # would give other weights if the directory were ignored
    model = build_model(cfg)
    loaded = {n.replace(".base_layer", ""): p for n, p in model.backbone.dit.state_dict().items() if "lora_" not in n}
    assert set(loaded) == set(saved.state_dict())
    for name, p in saved.state_dict().items():
        torch.testing.assert_close(loaded[name], p, rtol=0, atol=0)
    # inference loads only the blocks up to the last fused one, from the same directory
    small = build_model(cfg, inference=True)
    assert len(small.backbone.dit.blocks) == 3
    torch.testing.assert_close(small.backbone.dit.blocks[2].ffn.net[2].base_layer.weight, saved.blocks[2].ffn.net[2].weight)
    # a directory whose architecture disagrees with the config is refused by name
    cfg.backbone.ffn_dim = 256
    with pytest.raises(ValueError, match="ffn_dim"):
        build_model(cfg)


def _grads_of(model, passes) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Summed loss and gradients after backward through each (batch, branch) pass."""
    model.zero_grad(set_to_none=True)
    loss = 0.0
    for batch, branch in passes:
        out = model(batch, generator=torch.Generator().manual_seed(3), branch=branch)
        out["loss"].backward()
        loss = loss + out["loss"].detach()
    return loss, [p.grad.clone() for p in model.parameters() if p.requires_grad]


def test_activation_checkpointing_keeps_mask_and_gradients():
    """Recomputed blocks (whole, or only their cheap ops) must see the same masked attention as the first pass."""
    cfg = tiny_config()
    model = build_model(cfg)
    batch = tiny_batch(cfg)
    results = []
    # none; the first block, fully recomputed; all selectively; all, the first fully
    for blocks, full in ((0, 0), (1, 1), (-1, 0), (-1, 1)):
        model.backbone.checkpoint_blocks, model.backbone.full_recompute_blocks = blocks, full
        results.append(_grads_of(model, [(batch, "both")]))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        for a, b in zip(results[0][1], grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_separate_branch_passes_give_the_joint_gradients():
    """Video then action backward (the low-memory step) accumulates exactly the joint loss's gradients."""
    cfg = tiny_config()
    model = build_model(cfg)
    batch = tiny_batch(cfg)
    joint_loss, joint = _grads_of(model, [(batch, "both")])
    split_loss, split = _grads_of(model, [(batch, "video"), (batch, "action")])
    torch.testing.assert_close(split_loss, joint_loss)
    for a, b in zip(joint, split):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="branch"):
        model(batch, branch="audio")

def test_frozen_weights_stored_in_bf16_compute_as_their_fp32_values():
    """`model.backbone.frozen_dtype=bfloat16` halves the frozen blocks' bytes; the step equals fp32 on those values."""
    cfg = tiny_config(freeze=True, frozen_dtype="bfloat16")  # frozen as in the paper (the demo trains its DiT)
    torch.manual_seed(0)
    narrow = build_model(cfg)
    torch.manual_seed(0)
    wide = build_model(tiny_config(freeze=True))
    with torch.no_grad():  # the fp32 model holds exactly the values the bf16 one stores
        for m in wide.backbone.dit.blocks.modules():
            if type(m) is torch.nn.Linear and not m.weight.requires_grad:
                m.weight.copy_(m.weight.bfloat16().float())
                if m.bias is not None:
                    m.bias.copy_(m.bias.bfloat16().float())
    frozen = [p for p in narrow.backbone.dit.blocks.parameters() if not p.requires_grad and p.ndim == 2]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.float32 for p in narrow.parameters() if p.requires_grad)
    randomize_lora(narrow)
    randomize_lora(wide)
    batch = tiny_batch(cfg)
    for blocks in (0, -1):  # plain, and selective activation checkpointing
        narrow.backbone.checkpoint_blocks = wide.backbone.checkpoint_blocks = blocks
        loss_n, grads_n = _grads_of(narrow, [(batch, "both")])
        loss_w, grads_w = _grads_of(wide, [(batch, "both")])
        torch.testing.assert_close(loss_n, loss_w, rtol=0, atol=0)
        for a, b in zip(grads_n, grads_w):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # merged for inference: exact, LoRA folds into the weights widened to fp32
        unmerged = narrow.predict_actions(batch)
        merged = narrow.for_inference().predict_actions(batch)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
