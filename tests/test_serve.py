"""`python -m pipeline.serve` against the real openpi client: wire compatibility, the observation contract, bad
clients, concurrency, the API key and a clean SIGTERM. The server runs as its own process (as a user starts it),
bound to 127.0.0.1; after every bad client the same process must still answer a good request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from serve_bundle import tiny_bundle
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from model.policy import Observation, camera_name
from pipeline.cli import load_config
from pipeline.policy_bundle import load_policy
from pipeline.serve.policy import describe
from pipeline.serve.server import PolicyServer

PROMPT = "reach the goal position"
CAMERAS = ("observation.images.corner", "observation.images.gripperPOV")
# openpi-client opens its connection the way websockets >= 16 deprecates (not as a context manager)
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
SERVING = re.compile(r"serving .* on ws://127\.0\.0\.1:(\d+)")


def observation(seed: int = 0, height: int = 48, width: int = 40) -> dict:
    """Camera images at a size other than the policy's (the server resizes), a state in MetaWorld's range."""
    rng = np.random.default_rng(seed)
    images = {key: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for key in CAMERAS}
    return {**images, "state": rng.uniform([-0.4, 0.4, 0.05, 0.0], [0.4, 0.9, 0.3, 1.0]), "prompt": PROMPT}


def in_process(loaded, obs: dict) -> np.ndarray:
    """The policy evaluation calls, in process, on the same observation."""
    images = {camera_name(k): obs[k] for k in CAMERAS}
    return loaded.policy.act(Observation(images, np.asarray(obs["state"], np.float32), obs["prompt"]))


class Server:
    """A `python -m pipeline.serve` process; its log is collected line by line."""

    def __init__(self, cwd: Path, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.serve", "serve.port=0", *args], cwd=cwd,
                                     env={**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.cwd = cwd
        self.workdir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("workdir=")))
        self.lines: list[str] = []
        self.port: int | None = None
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        if not ready.wait(180) or self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + self.log)

    def _read(self, ready: threading.Event) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if (m := SERVING.search(line)) and self.port is None:
                self.port = int(m.group(1))
                ready.set()
        ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle(tmp_path_factory.mktemp("serve") / "bundle")


@pytest.fixture(scope="module")
def loaded(bundle):
    return load_policy(bundle)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("serve-cwd")
    srv = Server(cwd, f"model={bundle}", f"workdir={cwd.parent / 'serve-work'}",
                 "serve.max_message_mib=1", "serve.idle_timeout_s=2", "serve.handshake_timeout_s=1",
                 "serve.summary_every_s=1", "serve.max_connections=32")
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()


def assert_serves(server: Server, loaded, seed: int = 1) -> None:
    """The acceptance check after every bad client: the same process answers a good request correctly."""
    assert server.proc.poll() is None, server.log
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    obs = observation(seed)
    np.testing.assert_allclose(client.infer(obs)["actions"], in_process(loaded, obs), atol=1e-5, rtol=1e-5)


def test_openpi_client_gets_metadata_then_the_in_process_actions(server, loaded):
    client = WebsocketClientPolicy("127.0.0.1", server.port)
    meta = client.get_server_metadata()
    assert meta["image_keys"] == list(CAMERAS) and meta["prompts"] == [PROMPT]
    assert (meta["state_dim"], meta["action_dim"], meta["action_horizon"]) == (4, 4, 4)
    assert meta["control_hz"] == 20 and meta["max_message_bytes"] == 2**20
    obs = observation(0)
    first, second = client.infer(obs), client.infer(observation(2, 64, 64))
    assert first["actions"].dtype == np.float32 and first["actions"].shape == (4, 4)
    np.testing.assert_allclose(first["actions"], in_process(loaded, obs), atol=1e-5, rtol=1e-5)
    assert not np.allclose(first["actions"], second["actions"])  # the answer depends on the observation
    assert first["server_timing"]["infer_ms"] > 0 and "prev_total_ms" not in first["server_timing"]
    assert second["server_timing"]["prev_total_ms"] >= first["server_timing"]["infer_ms"]
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as reply:
        assert reply.status == 200


def packed(**changes) -> bytes:
    obs = observation(0)
    obs.update(changes)
    return msgpack_numpy.packb({k: v for k, v in obs.items() if v is not None})


OBJECT_ARRAY = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
SHORT_ARRAY = msgpack.packb({**{k: observation(0)[k] for k in CAMERAS}, "state": {b"__ndarray__": True,
                             b"data": b"\0" * 12, b"dtype": "<f4", b"shape": [4]}, "prompt": PROMPT},
                            default=msgpack_numpy.pack_array)
BAD = {  # frame -> what the error text must name
    "malformed msgpack": (b"\xc1\xff\x00garbage", "not valid msgpack"),
    "text frame": ("hello", "text frame"),
    "not a map": (msgpack_numpy.packb([1, 2, 3]), "map"),
    "object dtype": (OBJECT_ARRAY, "dtype"),
    "array shorter than its shape": (SHORT_ARRAY, "needs 16 bytes"),
    "missing camera": (packed(**{CAMERAS[1]: None}), CAMERAS[1]),
    "missing prompt": (packed(prompt=None), "prompt"),
    "float image": (packed(**{CAMERAS[0]: np.zeros((32, 32, 3), np.float32)}), CAMERAS[0]),
    "grey image": (packed(**{CAMERAS[0]: np.zeros((32, 32), np.uint8)}), CAMERAS[0]),
    "state as a list": (packed(state=[0.0, 0.5, 0.1, 0.5]), "'state' must be a float array of shape [4]"),
    "state too long": (packed(state=np.zeros(7)), "shape [4]"),
    "integer state": (packed(state=np.zeros(4, np.int64)), "'state' must be a float array"),
    "non-finite state": (packed(state=np.array([0.0, np.inf, 0.1, 0.5])), "finite"),
    "unknown prompt": (packed(prompt="open the drawer"), PROMPT),
    "prompt not a string": (packed(prompt=np.float32(3.0)), "'prompt' must be a string"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_a_named_error_then_1011(server, loaded, case):
    frame, expected = BAD[case]
    with connect(server.uri, max_size=None, open_timeout=10) as ws:
        ws.recv(timeout=10)  # metadata
        ws.send(frame)
        error = ws.recv(timeout=30)
        assert isinstance(error, str) and expected in error, error
        assert "Traceback" not in error  # serve.debug=false
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1011
    assert_serves(server, loaded)


def test_oversized_frame_is_refused_before_decoding(server, loaded):
    with connect(server.uri, max_size=None, open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send(b"\0" * (2 * 2**20))  # serve.max_message_mib=1
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1009  # message too big
    assert_serves(server, loaded)


def test_silent_clients_are_dropped(server, loaded):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:  # never starts the handshake
        assert raw.recv(1024) == b""  # closed by the server after serve.handshake_timeout_s
    with connect(server.uri, max_size=None, open_timeout=10) as ws:  # handshakes, then never sends
        ws.recv(timeout=10)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)  # serve.idle_timeout_s=2
    assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
    assert_serves(server, loaded)


def test_client_leaving_mid_request_does_not_disturb_the_server(server, loaded):
    for _ in range(3):
        with connect(server.uri, max_size=None, open_timeout=10) as ws:
            ws.recv(timeout=10)
            ws.send(msgpack_numpy.packb(observation(0)))
        # closed before the reply
    assert_serves(server, loaded)


def test_concurrent_clients_each_get_their_own_answer(server, loaded):
    def client(i: int) -> list[tuple[np.ndarray, np.ndarray]]:
        policy = WebsocketClientPolicy("127.0.0.1", server.port)
        return [(policy.infer(obs)["actions"], in_process(loaded, obs)) for obs in
                (observation(100 + 10 * i + r) for r in range(3))]

    with ThreadPoolExecutor(16) as pool:
        replies = [pair for pairs in pool.map(client, range(16)) for pair in pairs]
    assert len(replies) == 48
    for got, expected in replies:  # no reply went to the wrong client
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert_serves(server, loaded)


@contextlib.contextmanager
def in_thread(server: PolicyServer):
    """The same server class on an event loop in a thread of this process (no second model load)."""
    loop, ready, ports = asyncio.new_event_loop(), threading.Event(), []
    stop = loop.create_future()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(server.run(stop, lambda port: (ports.append(port), ready.set())),))
    thread.start()
    try:
        assert ready.wait(60)
        yield ports[0]
    finally:
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))
        thread.join(60)
        loop.close()


def test_api_key_is_required_when_set(bundle, loaded):
    cfg = load_config([f"serve.model={bundle}", "serve.port=0", "serve.warmup=false"])[0]
    server = PolicyServer(cfg.serve, describe(loaded, cfg, {"model": str(bundle)}), api_key="s3cret")
    with in_thread(server) as port:
        for key in (None, "wrong"):
            with pytest.raises(InvalidStatus) as refused:
                WebsocketClientPolicy("127.0.0.1", port, api_key=key)
            assert refused.value.response.status_code == 401
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as reply:
            assert reply.status == 200  # health checks need no key
        client = WebsocketClientPolicy("127.0.0.1", port, api_key="s3cret")
        obs = observation(5)
        np.testing.assert_allclose(client.infer(obs)["actions"], in_process(loaded, obs), atol=1e-5, rtol=1e-5)


def test_network_bind_needs_a_key_or_insecure(bundle, tmp_path, monkeypatch, caplog):
    from pipeline.serve.config import ServeConfig
    from pipeline.serve.server import api_key_for, main

    monkeypatch.delenv("LIGHTWAM_API_KEY", raising=False)
    with pytest.raises(ValueError, match="API key"):
        api_key_for(ServeConfig(host="0.0.0.0"))
    with pytest.raises(SystemExit) as refused:  # refused before the model is loaded or a port bound
        main([f"model={bundle}", f"workdir={tmp_path}", "serve.host=0.0.0.0"])
    assert refused.value.code == 1
    assert api_key_for(ServeConfig(host="0.0.0.0", api_key="k")) == "k"
    assert api_key_for(ServeConfig(host="127.0.0.1")) == ""
    assert api_key_for(ServeConfig(host="0.0.0.0", insecure=True)) == ""
    assert "insecure" in caplog.text


def test_closed_loop_metaworld_through_the_server_matches_in_process(bundle, loaded):
    """The robot loop over the wire (`eval.via_server`): the same episodes, state by state, as in process.

    On a server with the default idle timeout: simulating a chunk may take longer than the module server's 2 s.
    """
    from pipeline.serve.client import ServerPolicy
    from sim.evaluation import evaluate, plan_episodes
    from sim.policies import LearnedPolicy
    from sim.rollout import EnvSpec, LoopSettings

    class Recording:  # every state the robot was in when it asked for a chunk
        needs_expert = False

        def __init__(self, inner) -> None:
            self.inner, self.states = inner, []

        def act_batch(self, requests):
            self.states += [r.state for r in requests]
            return self.inner.act_batch(requests)

    env = EnvSpec("metaworld", "metaworld", "reach-v3", ("corner", "gripperPOV"), 32, 32, max_steps=16)
    plan = plan_episodes([env], 1, 1000, 0)
    settings = LoopSettings(replan_every=4)
    local_policy = Recording(LearnedPolicy(loaded.policy))
    _, local = evaluate(plan, local_policy, settings, num_workers=0)
    cfg = load_config([f"serve.model={bundle}", "serve.port=0", "serve.warmup=false"])[0]
    with in_thread(PolicyServer(cfg.serve, describe(loaded, cfg, {"model": str(bundle)}))) as port:
        remote_policy = Recording(ServerPolicy(f"ws://127.0.0.1:{port}"))
        _, remote = evaluate(plan, remote_policy, settings, num_workers=0)
    assert [(r.seed, r.success, r.steps) for r in remote] == [(r.seed, r.success, r.steps) for r in local]
    np.testing.assert_allclose(np.stack(remote_policy.states), np.stack(local_policy.states), atol=1e-5)
    assert np.ptp(np.stack(local_policy.states)[:, :3], axis=0).max() > 1e-3  # the policy really moved the arm
    with pytest.raises(ValueError, match="cannot use the policy server"):
        ServerPolicy("ws://127.0.0.1:1")  # nothing listens on port 1


def test_sigterm_stops_cleanly_having_written_nothing(server):
    """Last, on the module's server: after every test above, a clean exit and no file but its log."""
    assert server.stop() == 0, server.log
    assert "latency p50" in server.log  # the periodic summaries (serve.summary_every_s=1) and the final one
    assert "shutting down" in server.log and "Traceback" not in server.log, server.log
    assert list(server.cwd.iterdir()) == [] and not server.workdir.exists()
