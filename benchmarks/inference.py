"""Inference cost per control step: batch 1, cached text, fp32 on CPU.

    python -m benchmarks.inference [--presets paper,demo] [--runs 5] [--warmup 1] [--threads 2]

Each (preset, path) runs in its own subprocess so peak memory (RSS high-water
mark) is its own. Two paths:
  plain  the whole model as trained: all DiT blocks, LoRA unmerged, the full VAE;
  fast   what the policy runs: blocks up to the last fused one only (never built
         beyond), LoRA merged and unloaded, the VAE encoder only.
Weights are random (built on `meta`, filled cheaply): cost does not depend on values.

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
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _reset_rss_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so the step peak excludes building the model."""
    Path("/proc/self/clear_refs").write_text("5")


def child(preset: str, path: str, runs: int, warmup: int, threads: int) -> dict:
    import torch

    from model.light_wam import build_model
    from model.vae import build_vae, encode
    from pipeline.presets import PRESETS

    torch.set_num_threads(threads)
    cfg = PRESETS[preset]()
    t0 = time.perf_counter()
    vae = build_vae(cfg.cache.vae)
    fast = path == "fast"
    if fast:
        del vae.decoder, vae.post_quant_conv  # encoding only
    model = build_model(cfg.model, inference=fast, fast_init=True)
    model = model.for_inference() if fast else model.eval().requires_grad_(False)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand back what setup freed
    setup_s, setup_peak = time.perf_counter() - t0, _rss_peak_gib()

    h, w = cfg.cache.image_height, 2 * cfg.cache.image_width  # two cameras side by side
    pixels = torch.rand(1, 3, 1, h, w) * 2 - 1
    text = torch.randn(1, cfg.cache.text.max_tokens, cfg.model.backbone.text_dim)
    proprio = torch.zeros(1, cfg.model.proprio_dim)
    bb = model.backbone

    def step() -> tuple[float, float, float]:
        t0 = time.perf_counter()
        latent = encode(vae, pixels)
        t1 = time.perf_counter()
        fused, _ = bb(latent, bb.context(text, proprio), None, truncate=fast)
        t2 = time.perf_counter()
        actions = model.expert(fused, model.patch_grid(latent), proprio)
        t3 = time.perf_counter()
        assert actions.shape == (1, cfg.model.action_horizon, cfg.model.action_dim)
        return t1 - t0, t2 - t1, t3 - t2

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
        "step_s": statistics.median(sum(t) for t in times),
        "vae_s": vae_s,
        "dit_s": dit_s,
        "expert_s": expert_s,
        "step_peak_gib": _rss_peak_gib(),
        "setup_peak_gib": setup_peak,
        "setup_s": setup_s,
    }


def machine(threads: int) -> str:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    load = os.getloadavg()[0]
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads, load avg {load:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="paper,demo")
    ap.add_argument("--paths", default="fast,plain")
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
            cmd = [sys.executable, __file__, "--child", preset, path, "--runs", str(args.runs),
                   "--warmup", str(args.warmup), "--threads", str(args.threads)]
            print(f"running {preset}/{path} ...", file=sys.stderr, flush=True)
            env = dict(os.environ)
            if args.malloc == "reuse":
                env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2**31))
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"{preset}/{path} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print(f"\nmachine: {machine(args.threads)}; fp32, batch 1, "
          f"median of {args.runs} after {args.warmup} warm-up, malloc {args.malloc}")
    head = f"{'preset':7} {'path':6} {'blocks':>6} {'step s':>8} {'VAE s':>7} {'DiT s':>7} {'expert s':>8} {'step peak GiB':>13} {'setup peak GiB':>14} {'setup s':>7}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['preset']:7} {r['path']:6} {r['blocks']:>6} {r['step_s']:>8.3f} {r['vae_s']:>7.3f} {r['dit_s']:>7.3f} "
              f"{r['expert_s']:>8.3f} {r['step_peak_gib']:>13.2f} {r['setup_peak_gib']:>14.2f} {r['setup_s']:>7.1f}")
    by = {(r["preset"], r["path"]): r for r in rows}
    for preset in args.presets.split(","):
        if (preset, "fast") in by and (preset, "plain") in by:
            f, p = by[preset, "fast"], by[preset, "plain"]
            print(f"{preset}: fast/plain time {f['step_s'] / p['step_s']:.2f}x, step peak {f['step_peak_gib'] / p['step_peak_gib']:.2f}x")
    if ("paper", "fast") in by:
        f = by["paper", "fast"]
        print(f"paper fast vs the authors' code (8.3 s, 8.9 GiB): time {f['step_s'] / 8.3:.2f}x, "
              f"peak {max(f['step_peak_gib'], f['setup_peak_gib']) / 8.9:.2f}x")


if __name__ == "__main__":
    main()
