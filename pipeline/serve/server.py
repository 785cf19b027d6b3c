"""The policy server: websocket handling, auth, limits and the one inference thread (`python -m pipeline.serve`)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from pipeline.cli import parse_or_exit
from pipeline.config import Config
from pipeline.serve.config import API_KEY_ENV, ServeConfig
from pipeline.serve.policy import (
    ServedPolicy,
    dummy_observation,
    infer,
    load_served,
    max_message_bytes,
)
from pipeline.serve.protocol import (
    Observation,
    ObservationError,
    ProtocolError,
    packb,
    unpackb,
    validate,
)

log = logging.getLogger("pipeline.serve")
HEALTH_PATH = "/healthz"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or "" (every interface): assume reachable from the network


def api_key_for(cfg: ServeConfig) -> str:
    """The key clients must present, or "" when none is needed; refuses an open non-loopback bind."""
    key = cfg.api_key or os.environ.get(API_KEY_ENV, "")
    if not key and not is_loopback(cfg.host):
        if not cfg.insecure:
            raise ValueError(f"serve.host={cfg.host!r} is reachable from other machines: set an API key "
                             f"(${API_KEY_ENV} or serve.api_key=...) or pass serve.insecure=true to serve without one")
        log.warning("!!! serve.insecure=true: anyone who can reach %s:%s can drive this policy, without a key !!!",
                    cfg.host, cfg.port)
    return key


class Stats:
    """Request latencies since the last summary, for the periodic info line."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.requests = self.errors = self.connections = 0

    def summary(self) -> str:
        line = f"{len(self.latencies_ms)} request(s), {self.errors} error(s) since last summary"
        if self.latencies_ms:
            p50, p99 = np.percentile(self.latencies_ms, [50, 99])
            line += f"; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        line += f"; {self.connections} client(s) connected, {self.requests} request(s) served in total"
        self.latencies_ms, self.errors = [], 0
        return line


class PolicyServer:
    def __init__(self, cfg: ServeConfig, served: ServedPolicy, api_key: str = "",
                 infer_fn: Callable = infer) -> None:
        self.cfg, self.served, self.api_key, self.infer_fn = cfg, served, api_key, infer_fn
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy")  # owns the model
        self.stats = Stats()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the websocket handshake: health check, API key, connection limit."""
        if request.path.split("?")[0] == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.api_key:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                log.warning("refused %s: %s API key", connection.remote_address, "wrong" if given else "no")
                return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong API key: send the header "
                                                                   "'Authorization: Api-Key <key>'\n")
        if self.stats.connections >= self.cfg.max_connections:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      f"server busy: {self.cfg.max_connections} clients connected\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        peer = "%s:%s" % ws.remote_address[:2] if ws.remote_address else "?"
        self.stats.connections += 1
        log.info("client %s connected", peer)
        try:
            await ws.send(packb(self.served.metadata))
            await self._serve_client(ws, peer)
        except ConnectionClosed:
            pass  # the client left; nothing to answer
        finally:
            self.stats.connections -= 1
            log.info("client %s disconnected", peer)

    async def _serve_client(self, ws: ServerConnection, peer: str) -> None:
        loop = asyncio.get_running_loop()
        prev_total_ms: float | None = None
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), self.cfg.idle_timeout_s)
            except TimeoutError:
                log.info("client %s idle for %.0f s: closing", peer, self.cfg.idle_timeout_s)
                await ws.close(CloseCode.NORMAL_CLOSURE, f"idle for {self.cfg.idle_timeout_s:.0f} s")
                return
            received = time.perf_counter()
            try:
                if isinstance(frame, str):
                    raise ProtocolError("expected a binary msgpack frame, got a text frame")
                observation = validate(unpackb(frame), self.served.spec)
                actions, infer_ms = await loop.run_in_executor(self.worker, self._timed_infer, observation)
            except (ProtocolError, ObservationError) as err:
                await self._fail(ws, peer, f"invalid request: {err}", err)
                return
            except Exception as err:  # the model failed: the client learns why, the server keeps serving
                log.exception("inference failed for client %s", peer)
                await self._fail(ws, peer, f"inference failed: {type(err).__name__}: {err}", err)
                return
            timing = {"infer_ms": infer_ms}
            if prev_total_ms is not None:
                timing["prev_total_ms"] = prev_total_ms
            await ws.send(packb({"actions": actions, "server_timing": timing}))
            prev_total_ms = (time.perf_counter() - received) * 1000
            self.stats.requests += 1
            self.stats.latencies_ms.append(prev_total_ms)
            log.debug("client %s: %.1f ms (inference %.1f ms)", peer, prev_total_ms, infer_ms)

    def _timed_infer(self, observation: Observation) -> tuple[np.ndarray, float]:
        """On the worker thread: the chunk and the inference time alone (not the wait behind other clients)."""
        started = time.perf_counter()
        actions = self.infer_fn(self.served, observation)
        return actions, (time.perf_counter() - started) * 1000

    async def _fail(self, ws: ServerConnection, peer: str, message: str, err: Exception) -> None:
        """openpi's error convention: the reason as a text frame, then close 1011."""
        self.stats.errors += 1
        log.info("client %s: %s", peer, message)
        if self.cfg.debug:
            message += "\n" + "".join(traceback.format_exception(err))
        await ws.send(message)
        await ws.close(CloseCode.INTERNAL_ERROR, "error; reason in the previous frame")

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.summary_every_s)
            log.info(self.stats.summary())

    async def run(self, stop: asyncio.Future, ready: Callable[[int], None] | None = None) -> None:
        """Serve until `stop` resolves; `ready(port)` once listening."""
        if self.cfg.warmup:
            started = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(self.worker, self.infer_fn, self.served,
                                                             dummy_observation(self.served))
            log.info("warm-up inference: %.0f ms", (time.perf_counter() - started) * 1000)
        async with serve(self.handle, self.cfg.host, self.cfg.port, process_request=self.process_request,
                         compression=None, max_size=max_message_bytes(self.cfg),
                         open_timeout=self.cfg.handshake_timeout_s) as server:
            port = server.sockets[0].getsockname()[1]
            host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
            log.info("serving %s on ws://%s:%d (health: http://%s:%d%s)", self.served.metadata.get("model", "?"),
                     host, port, host, port, HEALTH_PATH)
            if ready is not None:
                ready(port)
            reporter = asyncio.create_task(self._report())
            try:
                await stop
            finally:
                reporter.cancel()
                log.info("shutting down: %s", self.stats.summary())
        self.worker.shutdown(wait=True, cancel_futures=True)


async def serve_until_signal(server: PolicyServer) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
    await server.run(stop)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    args = [f"serve.{a}" if a.startswith("model=") else a for a in args]
    cfg: Config = parse_or_exit(args)
    logging.basicConfig(level=logging.DEBUG if cfg.serve.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.INFO if cfg.serve.debug else logging.WARNING)
    try:
        key = api_key_for(cfg.serve)
        served = load_served(cfg)
        asyncio.run(serve_until_signal(PolicyServer(cfg.serve, served, key)))
    except (ValueError, LookupError, FileNotFoundError, KeyError, OSError) as err:
        log.error("serve failed: %s", err)
        raise SystemExit(1) from None
    log.info("stopped")
