"""The evaluation loop's policy, asked through a running `pipeline.serve` with the real openpi client.

`python -m pipeline.evaluate model=... eval.via_server=ws://127.0.0.1:8000` drives MetaWorld exactly as
in-process evaluation does, except that every chunk comes over the wire: the robot loop a user deploys,
checked on this machine. The camera images sent are the renders in-process evaluation hands the policy; the
server resizes them as the policy does in process, so both give the same actions.
"""

from __future__ import annotations

import os

import numpy as np

from model.policy import camera_name
from pipeline.serve.config import API_KEY_ENV
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
        images = {key: request.images[camera_name(key)] for key in self.cameras}
        return {**images, "state": request.state, "prompt": request.instruction}

    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        return [np.asarray(self.client.infer(self.observation(r))["actions"]) for r in requests]
