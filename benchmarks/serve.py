"""What the policy server adds to a control step, and how it holds up under concurrent robots.

    python benchmarks/serve.py [--presets demo,bench] [--requests 100] [--seconds 10]

Per preset: a policy bundle of that preset's model with random weights (cost does not depend on values) is
written by the real bundle writer; then
  in-process  `pipeline.serve.policy.infer` (what the server's worker runs) called directly, batch 1;
  server      the same observation through `python -m pipeline.serve` (its own process) with the real
              openpi client: round trip p50/p99. The two alternate request by request, so a busy machine
              slows both alike; the overhead is the median of the paired differences;
  clients     1, 4 and 16 openpi clients in threads sending back to back for --seconds: requests/s and
              round-trip p50/p99 (one worker owns the model, so requests queue).
Observations are the preset's render size (64x64 per camera); the server resizes nothing then.

The in-process calls run on one worker thread, as the server runs them. On this shared 2-core machine under
heavy load, the same call from the main thread of a fresh process was seen taking 1-3 s instead of ~40 ms
(torch's OpenMP pool, 2 threads) while a worker thread of the same process stayed fast: not understood yet,
and it would make the comparison meaningless.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import machine

ROOT = Path(__file__).resolve().parents[1]
# this directory holds benchmarks/metaworld.py, which would shadow the metaworld package
sys.path[:] = [str(ROOT), str(ROOT / "tests")] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
SERVING = re.compile(r"serving .* on ws://127\.0\.0\.1:(\d+)")


def observation(meta: dict, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    obs = {k: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for k in meta["image_keys"]}
    return {**obs, "state": rng.uniform(-0.2, 0.2, meta["state_dim"]) + [0.0, 0.6, 0.15, 0.5][:meta["state_dim"]],
            "prompt": meta["prompts"][0]}


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def load_local(bundle: Path, preset: str):
    from pipeline.cli import load_config
    from pipeline.policy_bundle import load_policy
    from pipeline.serve.policy import describe

    return describe(load_policy(bundle), load_config([f"preset={preset}"])[0], {})


def start_server(bundle: Path, preset: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.serve", f"preset={preset}", f"model={bundle}",
                             f"workdir={workdir}", "serve.port=0", "serve.max_connections=64"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := SERVING.search(line):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc, int(m.group(1))
    raise RuntimeError(f"server exited with {proc.wait()}")


def paired(served, port: int, size: int, requests: int) -> tuple[list[float], list[float], list[float]]:
    """In-process and through-the-server requests alternated, so both see the same machine load."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    from pipeline.serve.policy import infer
    from pipeline.serve.protocol import validate

    client = WebsocketClientPolicy("127.0.0.1", port)
    obs = observation(client.get_server_metadata(), size, 0)
    local_obs = validate(obs, served.spec)
    worker = ThreadPoolExecutor(1)  # in process as in the server: on one worker thread (see the module docstring)
    worker.submit(infer, served, local_obs).result(), client.infer(obs)  # warm-up
    local, rtt, infer_ms = [], [], []
    for _ in range(requests):
        t0 = time.perf_counter()
        worker.submit(infer, served, local_obs).result()
        t1 = time.perf_counter()
        reply = client.infer(obs)
        local.append((t1 - t0) * 1000)
        rtt.append((time.perf_counter() - t1) * 1000)
        infer_ms.append(reply["server_timing"]["infer_ms"])
    return local, rtt, infer_ms


def concurrent(port: int, size: int, clients: int, seconds: float) -> tuple[float, list[float]]:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    policies = [WebsocketClientPolicy("127.0.0.1", port) for _ in range(clients)]
    start = threading.Barrier(clients)

    def run(i: int) -> list[float]:
        obs = observation(policies[i].get_server_metadata(), size, i)
        start.wait()
        end, times = time.perf_counter() + seconds, []
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            policies[i].infer(obs)
            times.append((time.perf_counter() - t0) * 1000)
        return times

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = [t for ts in pool.map(run, range(clients)) for t in ts]
    return len(times) / (time.perf_counter() - t0), times


def report(rows: list[dict], loads: list[float], args: argparse.Namespace) -> None:
    print(f"\nmachine: {machine.describe()}; load avg after each preset: {', '.join(f'{x:.1f}' for x in loads)}")
    print(f"batch 1, fp32, {args.requests} requests in process and {args.requests} through the server, alternated; "
          f"overhead = median of (round trip - in-process) over the pairs; concurrency: {args.seconds:.0f} s per row")
    head = (f"{'preset':7} {'in-process p50/p99 ms':>22} {'server infer p50 ms':>19} {'round trip p50/p99 ms':>22} "
            f"{'overhead p50 ms':>15}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['preset']:7} {r['local'][0]:>12.1f} / {r['local'][1]:>6.1f} {r['server_infer'][0]:>19.1f} "
              f"{r['rtt'][0]:>12.1f} / {r['rtt'][1]:>6.1f} {r['overhead']:>15.1f}")
    head = f"\n{'preset':7} {'clients':>7} {'requests/s':>10} {'round trip p50/p99 ms':>22}"
    print(head + "\n" + "-" * (len(head) - 1))
    for r in rows:
        for n, (rate, p50, p99) in r["throughput"].items():
            print(f"{r['preset']:7} {n:>7} {rate:>10.1f} {p50:>12.1f} / {p99:>6.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="demo,bench")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", default="1,4,16")
    args = ap.parse_args()

    from serve_bundle import random_bundle

    from pipeline.cli import load_config

    rows, loads = [], []
    for preset in args.presets.split(","):
        size = load_config([f"preset={preset}"])[0].demo.width
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{preset}: writing a random bundle ...", file=sys.stderr, flush=True)
            bundle = random_bundle(Path(tmp) / "bundle", [f"preset={preset}"])
            served = load_local(bundle, preset)
            proc, port = start_server(bundle, preset, Path(tmp) / "work")
            try:
                print(f"{preset}: in process and through the server, alternately ...", file=sys.stderr, flush=True)
                local, rtt, server_infer = paired(served, port, size, args.requests)
                row = {"preset": preset, "local": percentiles(local), "rtt": percentiles(rtt),
                       "server_infer": percentiles(server_infer), "throughput": {},
                       "overhead": float(np.median(np.subtract(rtt, local)))}
                for n in (int(c) for c in args.clients.split(",")):
                    print(f"{preset}: {n} concurrent client(s) ...", file=sys.stderr, flush=True)
                    rate, times = concurrent(port, size, n, args.seconds)
                    row["throughput"][n] = (rate, *percentiles(times))
                rows.append(row)
                loads.append(os.getloadavg()[0])
                report(rows, loads, args)  # after every preset: a long run interrupted keeps what it measured
            finally:
                proc.terminate()
                proc.wait(timeout=60)


if __name__ == "__main__":
    main()
