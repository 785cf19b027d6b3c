"""Inference cost per control step: batch 1, cached text, fp32 on CPU.

    python -m benchmarks.inference [--presets paper,demo] [--paths plain,fast,...] [--runs 5] [--warmup 1]

Each (preset, path) runs in its own subprocess so peak memory (RSS high-water
mark) is its own. Paths:
  plain  the whole model as trained: all DiT blocks, LoRA unmerged, the full VAE;
  fast   blocks up to the last fused one only (never built beyond), LoRA merged
         and unloaded, the VAE encoder only;
  fast+<levers>, levers joined by '+':
    vae2d  the exact single-frame VAE encode with 2-D convs (model/vae_single_frame.py);
    kv     the text's cross-attention K/V kept per prompt (model/prompt_kv.py);
           computing them once per task is reported apart, as `prompt s`;
    bf16   bf16 weights for the model and the VAE (fast only with avx512_bf16/amx_bf16);
    narrow the DiT blocks' weights stored in bf16, each widened for its fp32 matmul
           (model/frozen_weights.py): memory, not speed.
  The policy (model/policy.py) runs fast+vae2d+kv in the model's dtype (its LoRA merged into
  weights widened from any a preset stores narrow, so narrow is a lever here, not the policy's).
Weights are random (built on `meta`, filled cheaply): cost does not depend on values.
`CPU s` is the step's process CPU time (all threads): less moved by other load than wall time.
`act diff` is the max |difference| of the normalized action chunk against the
fast path on the same weights and inputs (fp32 paths: float rounding only).

`--malloc reuse` (default) starts the children with glibc told not to hand large
blocks back to the kernel (MALLOC_MMAP_MAX_=0, a high trim threshold): the same
activation buffers are then reused every step instead of being unmapped and
page-faulted in again, which otherwise costs a large share of CPU time. After
building, `malloc_trim` returns what setup freed (LoRA modules, the VAE decoder).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import machine


def _reset_rss_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the step peak excludes building the model."""
    Path("/proc/self/clear_refs").write_text("5")


def child(preset: str, path: str, runs: int, warmup: int, threads: int) -> dict:
    import torch

    from model.frozen_weights import narrow_frozen_linears
    from model.light_wam import build_model
    from model.prompt_kv import PromptKV
    from model.vae import build_vae, encode
    from model.vae_single_frame import encode_single_frame
    from pipeline.presets import PRESETS

    base, *levers = path.split("+")
    if base not in ("plain", "fast") or (levers and base != "fast") or set(levers) - {"vae2d", "kv", "bf16", "narrow"}:
        raise ValueError(f"path {path!r}: plain, fast, or fast+ any of vae2d, kv, bf16, narrow")
    if {"bf16", "narrow"} <= set(levers):
        raise ValueError(f"path {path!r}: narrow stores fp32 weights in bf16; with bf16 they already are")
    torch.set_num_threads(threads)
    cfg = PRESETS[preset]()
    t0 = time.perf_counter()
    vae = build_vae(cfg.cache.vae)
    fast = base == "fast"
    if fast:
        del vae.decoder, vae.post_quant_conv  # encoding only
    model = build_model(cfg.model, inference=fast, fast_init=True)
    model = model.for_inference() if fast else model.eval().requires_grad_(False)
    dtype = torch.bfloat16 if "bf16" in levers else torch.float32
    model, vae = model.to(dtype), vae.to(dtype)  # also widens frozen weights a preset stores narrow
    if "narrow" in levers:
        narrow_frozen_linears(model.backbone.dit.blocks, torch.bfloat16)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back what setup freed
    setup_s, setup_peak = time.perf_counter() - t0, machine.peak_gib()

    h, w = cfg.cache.image_height, 2 * cfg.cache.image_width  # two cameras side by side
    gen = torch.Generator().manual_seed(0)
    pixels = (torch.rand(1, 3, 1, h, w, generator=gen) * 2 - 1).to(dtype)
    text = torch.randn(1, cfg.cache.text.max_tokens, cfg.model.backbone.text_dim, generator=gen).to(dtype)
    proprio = (torch.rand(1, cfg.model.proprio_dim, generator=gen) * 2 - 1).to(dtype)
    bb = model.backbone
    encoder = encode_single_frame if "vae2d" in levers else encode
    prompt_s = 0.0
    if "kv" in levers:
        kv = PromptKV(model)
        t = time.perf_counter()
        kv.set_prompt(text)
        prompt_s = time.perf_counter() - t

        def dit(latent):
            with kv.active():
                return bb(latent, bb.proprio_proj(proprio)[:, None], None, truncate=True)[0]
    else:
        def dit(latent):
            return bb(latent, bb.context(text, proprio), None, truncate=fast)[0]

    def step() -> tuple[float, float, float, torch.Tensor, float]:
        c0 = time.process_time()
        t0 = time.perf_counter()
        latent = encoder(vae, pixels)
        t1 = time.perf_counter()
        fused = dit(latent)
        t2 = time.perf_counter()
        actions = model.expert(fused, model.shortcut_offset({"proprio": proprio, "current_pixels": pixels}))
        t3 = time.perf_counter()
        assert actions.shape == (1, cfg.model.action_horizon, cfg.model.action_dim)
        return t1 - t0, t2 - t1, t3 - t2, actions, time.process_time() - c0

    _reset_rss_peak()
    with torch.inference_mode():
        for _ in range(warmup):
            step()
        times = [step() for _ in range(runs)]
    vae_s, dit_s, expert_s = (statistics.median(t[i] for t in times) for i in range(3))
    return {
        "preset": preset,
        "path": path,
        "blocks": len(bb.dit.blocks),
        "tokens": (h // 16) * (w // 16),
        "step_s": statistics.median(sum(t[:3]) for t in times),
        "cpu_s": statistics.median(t[4] for t in times),
        "vae_s": vae_s,
        "dit_s": dit_s,
        "expert_s": expert_s,
        "prompt_s": prompt_s,
        "step_peak_gib": machine.peak_gib(),
        "setup_peak_gib": setup_peak,
        "setup_s": setup_s,
        "actions": times[-1][3].float().flatten().tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="paper,demo")
    ap.add_argument("--paths", default="plain,fast,fast+vae2d,fast+kv,fast+bf16,fast+narrow,fast+vae2d+kv,"
                                       "fast+vae2d+kv+narrow,fast+vae2d+kv+bf16")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--malloc", choices=["reuse", "default"], default="reuse")
    ap.add_argument("--child", nargs=2, metavar=("PRESET", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.runs, args.warmup, args.threads)))
        return

    rows = []
    for preset in args.presets.split(","):
        for path in args.paths.split(","):
            cmd = [sys.executable, "-m", "benchmarks.inference", "--child", preset, path, "--runs", str(args.runs),
                   "--warmup", str(args.warmup), "--threads", str(args.threads)]
            print(f"running {preset}/{path} ...", file=sys.stderr, flush=True)
            env = dict(os.environ)
            if args.malloc == "reuse":
                env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**31))
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"{preset}/{path} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "actions"}), file=sys.stderr, flush=True)

    print(f"\nmachine: {machine.describe(args.threads)}; bf16: {bf16_note()}; batch 1, "
          f"median of {args.runs} after {args.warmup} warm-up, malloc {args.malloc}")
    head = (f"{'preset':7} {'path':21} {'blocks':>6} {'step s':>7} {'CPU s':>7} {'VAE s':>6} {'DiT s':>6} {'expert s':>8} "
            f"{'prompt s':>8} {'step GiB':>8} {'setup GiB':>9} {'vs fast':>7} {'act diff':>8}")
    print(head + "\n" + "-" * len(head))
    by = {(r["preset"], r["path"]): r for r in rows}
    for r in rows:
        ref = by.get((r["preset"], "fast"))
        ratio = f"{r['step_s'] / ref['step_s']:.2f}x" if ref else "-"
        diff = f"{max(abs(a - b) for a, b in zip(r['actions'], ref['actions'])):.1e}" if ref else "-"
        print(f"{r['preset']:7} {r['path']:21} {r['blocks']:>6} {r['step_s']:>7.3f} {r['cpu_s']:>7.3f} {r['vae_s']:>6.3f} {r['dit_s']:>6.3f} "
              f"{r['expert_s']:>8.3f} {r['prompt_s']:>8.3f} {r['step_peak_gib']:>8.2f} {r['setup_peak_gib']:>9.2f} "
              f"{ratio:>7} {diff:>8}")
    for preset in args.presets.split(","):
        if (preset, "fast") in by:
            scale = max(abs(a) for a in by[preset, "fast"]["actions"])
            print(f"{preset}: the fast path's largest |normalized action| is {scale:.2f} (scale for `act diff`)")
    for (preset, path), r in by.items():
        if preset == "paper" and path != "plain":
            print(f"paper {path} vs the authors' code (8.3 s, 8.9 GiB): time {r['step_s'] / 8.3:.2f}x, "
                  f"peak {max(r['step_peak_gib'], r['setup_peak_gib']) / 8.9:.2f}x")


def bf16_note() -> str:
    from model.precision import bf16_support

    return bf16_support("cpu")[1]


if __name__ == "__main__":
    main()
