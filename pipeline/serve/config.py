"""Settings of the policy server (`python -m pipeline.serve`): where it listens and how it protects itself."""

from __future__ import annotations

from dataclasses import dataclass

API_KEY_ENV = "LIGHTWAM_API_KEY"  # read when serve.api_key is empty: keeps the key off the command line


@dataclass
class ServeConfig:
    model: str = ""  # models:/name@alias, models:/name/3, runs:/id/path or a bundle dir (`model=` is shorthand)
    host: str = "127.0.0.1"  # loopback only; any other address needs an API key or serve.insecure=true
    port: int = 8000  # 0 = any free port (the log line says which)
    api_key: str = ""  # clients send `Authorization: Api-Key <key>` (the openpi client's api_key=); empty = $LIGHTWAM_API_KEY
    insecure: bool = False  # allow a non-loopback bind without an API key: anyone who can reach it drives the robot
    debug: bool = False  # error frames carry the server's traceback
    max_message_mib: float = 4.0  # larger frames close the connection (1009) before they are decoded
    handshake_timeout_s: float = 10.0  # a client that does not finish the websocket handshake is dropped
    idle_timeout_s: float = 120.0  # a connected client that sends nothing for this long is closed (1000)
    max_connections: int = 64  # further clients are refused with HTTP 503 until one leaves
    summary_every_s: float = 60.0  # info log: requests, errors, p50/p99 latency since the last summary
    warmup: bool = True  # one dummy inference before accepting clients, so the first request is not the slow one
