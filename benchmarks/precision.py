"""bf16 against fp32 on the demo model: training losses side by side, then the actions' difference.

    python -m benchmarks.precision [--steps 300] [--every 25] [--threads 2]

1. Training: the demo preset's model and optimizer, `--steps` steps in fp32 and
   again with `train.precision=bf16` (autocast, fp32 weights and AdamW state), from
   the same initial weights on the same batches through the workers' step code.
   The batches are a fixed pool of random latents and text whose action chunks are
   a fixed smooth function of the state, so the action loss can fall.
2. Inference: the fp32-trained model prepared as the policy runs it (merged,
   truncated, single-frame VAE encode, per-prompt K/V), then cast to bf16 weights
   (model and VAE): the max |difference| of the normalized action chunk on the same
   inputs, and the VAE latent's max |difference| (bf16 VAE against fp32).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch


def batches(cfg, count: int, seed: int) -> list[dict]:
    from benchmarks.train_throughput import step_batch

    torch.manual_seed(seed)
    mix = torch.randn(cfg.model.proprio_dim, cfg.model.action_horizon * cfg.model.action_dim)
    out = []
    for _ in range(count):
        b = step_batch(cfg, cfg.train.batch_size)
        b["actions"] = torch.tanh(b["proprio"] @ mix).view_as(b["actions"])
        out.append(b)
    return out


def train(cfg, model, pool: list[dict], steps: int, precision) -> tuple[list[float], float]:
    from pipeline.train.state import make_optimizer
    from pipeline.train.step import accumulate_gradients

    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.train)
    losses, times = [], []
    for i in range(steps):
        start = time.perf_counter()
        out = accumulate_gradients(model, [pool[i % len(pool)]], cfg.model, cfg.train.separate_branch_passes,
                                   torch.device("cpu"), precision)
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append((out["loss"], out.get("action_loss", 0.0), out.get("video_loss", 0.0)))
        if (i + 1) % 50 == 0:
            print(f"  {precision.value}: step {i + 1}/{steps}", file=sys.stderr, flush=True)
    return losses, statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from model.light_wam import build_model
    from model.precision import bf16_support
    from model.prompt_kv import PromptKV
    from model.vae import build_vae
    from model.vae_single_frame import encode_single_frame
    from pipeline.cli import load_config
    from pipeline.config import Precision

    torch.set_num_threads(args.threads)
    cfg = load_config(["preset=demo"])[0]
    pool = batches(cfg, 16, seed=0)
    torch.manual_seed(0)
    start = build_model(cfg.model)
    runs = {}
    for precision in (Precision.fp32, Precision.bf16):
        model = copy.deepcopy(start).train()
        runs[precision] = (*train(cfg, model, pool, args.steps, precision), model)

    print(f"\nbf16: {bf16_support('cpu')[1]}; demo preset, batch {cfg.train.batch_size}, {args.steps} steps, "
          f"{args.threads} threads")
    print(f"median step s: fp32 {runs[Precision.fp32][1]:.3f}, bf16 {runs[Precision.bf16][1]:.3f}\n")
    print("| steps | loss fp32 | loss bf16 | action loss fp32 | action loss bf16 | video loss fp32 | video loss bf16 |")
    print("|---|---|---|---|---|---|---|")
    for end in range(args.every, args.steps + 1, args.every):
        window = {p: r[0][end - args.every:end] for p, r in runs.items()}
        cells = []
        for k in range(3):
            cells += [f"{statistics.mean(w[k] for w in window[p]):.4f}" for p in (Precision.fp32, Precision.bf16)]
        print(f"| {end - args.every + 1}-{end} | " + " | ".join(cells) + " |")

    # inference: the fp32-trained model, fp32 against bf16 weights, on held inputs
    vae = build_vae(cfg.cache.vae)
    fp32_model = runs[Precision.fp32][2].eval().for_inference()
    bf16_model, bf16_vae = copy.deepcopy(fp32_model).to(torch.bfloat16), copy.deepcopy(vae).to(torch.bfloat16)
    held = batches(cfg, 2, seed=1)
    h, w = cfg.cache.image_height, 2 * cfg.cache.image_width
    diffs, latent_diffs, scale = [], [], 0.0
    for b in held:
        pixels = torch.rand(b["proprio"].shape[0], 3, 1, h, w) * 2 - 1
        latent = encode_single_frame(vae, pixels)
        latent_bf16 = encode_single_frame(bf16_vae, pixels.to(torch.bfloat16))
        latent_diffs.append(float((latent_bf16.float() - latent).abs().max()))
        want = PromptKV(fp32_model).predict_actions({"current_latent": latent, "text": b["text"], "proprio": b["proprio"]})
        got = PromptKV(bf16_model).predict_actions({"current_latent": latent_bf16, "text": b["text"].to(torch.bfloat16),
                                                    "proprio": b["proprio"].to(torch.bfloat16)})
        diffs.append(float((got.float() - want).abs().max()))
        scale = max(scale, float(want.abs().max()))
    print(f"\ninference, the fp32-trained model on {len(held) * cfg.train.batch_size} held inputs: bf16 weights "
          f"(model and VAE) against fp32: normalized action chunk max |diff| {max(diffs):.2e} "
          f"(largest |action| {scale:.2f}); VAE latent max |diff| {max(latent_diffs):.2e}")


if __name__ == "__main__":
    main()
