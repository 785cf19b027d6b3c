"""openpi's wire format and the server's observation contract.

Frames are binary msgpack. numpy arrays travel as `{"__ndarray__": True, "data": bytes, "dtype": str, "shape": [..]}`
and numpy scalars as `{"__npgeneric__": True, "data": value, "dtype": str}`; openpi-client writes these keys as
msgpack *bin* (Python bytes), so both bin and str keys are read, and bytes keys are written so that openpi's own
decoder recognises our replies. Unlike a pickle-based format, decoding never builds anything but plain data and
arrays of numeric dtypes, and every array is checked against its declared size before it is wrapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from model.policy import Observation, camera_name

NDARRAY, NPGENERIC = "__ndarray__", "__npgeneric__"
ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float: no objects, void records or complex
STATE_KEY, PROMPT_KEY = "state", "prompt"


class ProtocolError(ValueError):
    """A frame that is not a valid openpi message; the text goes back to the client."""


class ObservationError(ValueError):
    """A well-formed message that breaks the observation contract; the text names the key and what was expected."""


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise TypeError(f"cannot send an array of dtype {obj.dtype}")
        return {NDARRAY.encode(): True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {NPGENERIC.encode(): True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send a {type(obj).__name__}")


def packb(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, default=_pack_default)


def _field(obj: dict, name: str) -> Any:
    return obj[name.encode()] if name.encode() in obj else obj.get(name)


def _dtype(obj: dict) -> np.dtype:
    try:
        dtype = np.dtype(_field(obj, "dtype"))
    except TypeError as err:
        raise ProtocolError(f"unreadable array dtype {_field(obj, 'dtype')!r}") from err
    if dtype.kind not in ALLOWED_KINDS:
        raise ProtocolError(f"array dtype {dtype} is not accepted (numeric and bool only)")
    return dtype


def _unpack_hook(obj: dict) -> Any:
    if NDARRAY.encode() in obj or NDARRAY in obj:
        dtype, data, shape = _dtype(obj), _field(obj, "data"), _field(obj, "shape")
        if not isinstance(data, bytes):
            raise ProtocolError("array 'data' must be bytes")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ProtocolError(f"array 'shape' must be a list of non-negative ints, got {shape!r}")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise ProtocolError(f"array of shape {list(shape)} and dtype {dtype} needs "
                                f"{math.prod(shape) * dtype.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()  # writable, owns its memory
    if NPGENERIC.encode() in obj or NPGENERIC in obj:
        try:
            return _dtype(obj).type(_field(obj, "data"))
        except (TypeError, ValueError, OverflowError) as err:
            raise ProtocolError(f"unreadable numpy scalar: {err}") from err
    return obj


def unpackb(frame: bytes) -> Any:
    """One client frame -> Python objects and numpy arrays; ProtocolError when it is not valid msgpack."""
    try:
        return msgpack.unpackb(frame, object_hook=_unpack_hook, raw=False)
    except ProtocolError:
        raise
    except Exception as err:  # msgpack raises several unrelated types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError(f"frame is not valid msgpack: {type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class ObservationSpec:
    """What one request must hold: one image per camera key, the raw robot state, a known prompt."""

    cameras: tuple[str, ...]  # the policy's camera keys, e.g. "observation.images.corner"
    state_dim: int
    prompts: tuple[str, ...]  # the instructions the policy was trained on

    def describe(self) -> dict[str, Any]:
        """The contract as the metadata frame announces it."""
        return {"image_keys": list(self.cameras), "image_format": "uint8 [H, W, 3], any size (resized server-side)",
                "state_key": STATE_KEY, "state_dim": self.state_dim, "prompt_key": PROMPT_KEY,
                "prompts": list(self.prompts)}


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def validate(message: Any, spec: ObservationSpec) -> Observation:
    """The request as the policy needs it, or ObservationError naming the first key that is wrong."""
    if not isinstance(message, dict):
        raise ObservationError(f"an observation is a map of key -> value; got {_describe(message)}")
    missing = [k for k in (*spec.cameras, STATE_KEY, PROMPT_KEY) if k not in message]
    if missing:
        raise ObservationError(f"observation is missing key(s) {missing}; expected {list(spec.cameras)} "
                               f"(uint8 [H, W, 3] images), '{STATE_KEY}' and '{PROMPT_KEY}'")
    images = {}
    for key in spec.cameras:
        image = message[key]
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
            raise ObservationError(f"'{key}' must be a uint8 array of shape [H, W, 3]; got {_describe(image)}")
        images[key] = image
    state = message[STATE_KEY]
    if not (isinstance(state, np.ndarray) and state.dtype.kind == "f" and state.shape == (spec.state_dim,)):
        raise ObservationError(f"'{STATE_KEY}' must be a float array of shape [{spec.state_dim}]; "
                               f"got {_describe(state)}")
    if not np.isfinite(state).all():
        raise ObservationError(f"'{STATE_KEY}' must be finite; got {state.tolist()}")
    prompt = message[PROMPT_KEY]
    if not isinstance(prompt, str):
        raise ObservationError(f"'{PROMPT_KEY}' must be a string; got {_describe(prompt)}")
    if prompt not in spec.prompts:
        raise ObservationError(f"'{PROMPT_KEY}' {prompt!r} is not an instruction the policy was trained on; "
                               f"known: {list(spec.prompts)}")
    return Observation({camera_name(k): v for k, v in images.items()}, state.astype(np.float32), prompt)
