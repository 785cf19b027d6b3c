"""Rollout videos: frames -> an mp4 in memory (PyAV, H.264), small enough to return from a Ray actor."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np


def encode_mp4(frames: list[np.ndarray], fps: int) -> bytes:
    """uint8 [H, W, 3] frames (H, W even) -> mp4 bytes."""
    if not frames:
        raise ValueError("encode_mp4: no frames")
    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
