"""The evaluation loop's policy, asked through a running `pipeline.serve` with the real openpi client.

`python -m pipeline.evaluate model=... eval.via_server=ws://127.0.0.1:8000` drives MetaWorld exactly as
in-process evaluation does, except that every chunk comes over the wire: the robot loop a user deploys,
checked on this machine. The camera images sent are the ones in-process evaluation feeds the policy (already
at the policy's size, so the server's resize leaves them as they are): both give the same actions.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline.serve_config import API_KEY_ENV
from sim.rollout import Request


class ServerPolicy:
    """A `sim.policies.ChunkPolicy` whose chunks come from a policy server (one connection, requests in order)."""

    needs_expert = False

    def __init__(self, uri: str, api_key: str | None = None) -> None:
        try:
            from openpi_client.websocket_client_policy import WebsocketClientPolicy
        except ImportError as err:
            raise ImportError("eval.via_server needs openpi-client: pip install --no-deps openpi-client "
                              "(see the README, 'Serve the policy')") from err
        from websockets.exceptions import InvalidHandshake

        try:
            self.client = WebsocketClientPolicy(uri, api_key=api_key or os.environ.get(API_KEY_ENV) or None)
        except (OSError, InvalidHandshake) as err:  # refused, unreachable, or the server said 401/503
            raise ValueError(f"cannot use the policy server at {uri}: {err}") from None
        self.metadata = self.client.get_server_metadata()
        self.cameras = list(self.metadata["image_keys"])

    def observation(self, request: Request) -> dict:
        if request.current is not None:
            raise ValueError("eval.via_server: the served policy reads a larger current frame "
                             "(cache.current_frame_scale > 1), which the wire protocol does not carry")
        views = np.split(request.image, len(self.cameras), axis=1)  # joined left to right in the policy's order
        return {**dict(zip(self.cameras, views)), "state": request.state, "prompt": request.instruction}

    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        return [np.asarray(self.client.infer(self.observation(r))["actions"]) for r in requests]
