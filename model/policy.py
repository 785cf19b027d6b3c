"""The inference policy: raw robot observations in, raw action chunks out.

One class serves closed-loop evaluation and the policy server alike. It owns
everything between a robot and the model: each camera resized and joined as
the cache joined them (`model.pixels`), the state normalized and the actions
unnormalized with the training data's min/max (`model.normalize`), the cached
text embedding of each instruction, the VAE, and a model prepared for
inference (LoRA merged, blocks after the last fused one dropped).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from model.light_wam import LightWAM
from model.normalize import MinMax
from model.pixels import join_cameras, to_unit_range
from model.prompt_kv import PromptKV
from model.vae_single_frame import encode_single_frame

CAMERA_PREFIX = "observation.images."


def camera_name(key: str) -> str:
    """LeRobot key `observation.images.wrist` -> camera name `wrist`; a plain name stays as it is."""
    return key.removeprefix(CAMERA_PREFIX)


@dataclass
class Observation:
    """One moment of the robot: its camera images, its state and what it was asked to do."""

    images: dict[str, np.ndarray]  # camera name -> uint8 [H, W, 3], any size
    state: np.ndarray  # float [P], in the robot's units
    prompt: str  # the task instruction, one of the policy's training tasks


@dataclass
class Prompts:
    """The cached text embedding of every instruction the policy was trained on."""

    embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]]  # prompt -> ([L, D] float, [L] bool)

    def batch(self, prompts: list[str], device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        unknown = sorted(set(prompts) - set(self.embeddings))
        if unknown:
            raise KeyError(f"prompt(s) {unknown} were not in the training data; known: {sorted(self.embeddings)}")
        texts = [self.embeddings[p] for p in prompts]
        length = max(e.shape[0] for e, _ in texts)
        emb = torch.zeros(len(prompts), length, texts[0][0].shape[1])
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, (e, m) in enumerate(texts):
            emb[i, : e.shape[0]], mask[i, : e.shape[0]] = e, m
        return emb.to(device, dtype), mask.to(device)


class LightWAMPolicy:
    """`act_batch(observations)` -> raw action chunks [B, H, A] (float32 numpy), one forward pass."""

    def __init__(self, model: LightWAM, vae: AutoencoderKLWan, state_norm: MinMax, action_norm: MinMax,
                 prompts: Prompts, cameras: list[str], image_size: tuple[int, int]) -> None:
        self.model = model if model.inference_only else model.for_inference()
        self.vae = vae.eval().requires_grad_(False)
        self.prompt_kv = PromptKV(self.model)  # the task's text K/V once per prompt, not every step
        self._lock = threading.Lock()  # the kept K/V live in the model's processors: one prediction at a time
        self.state_norm, self.action_norm = state_norm, action_norm
        self.prompts = prompts
        self.cameras = [camera_name(c) for c in cameras]
        self.image_height, self.image_width = image_size  # per camera, as the cache stored them
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @property
    def horizon(self) -> int:
        return self.model.cfg.action_horizon

    def pixels(self, observations: list[Observation]) -> torch.Tensor:
        """[B, 3, 1, H, W * ncam] in [-1, 1]: the cameras resized and joined in the training order."""
        views = []
        for camera in self.cameras:
            missing = [i for i, o in enumerate(observations) if camera not in o.images]
            if missing:
                raise KeyError(f"observation {missing[0]} has no image for camera '{camera}'; "
                               f"it has {sorted(observations[missing[0]].images)}")
            views.append(np.stack([resize_one(o.images[camera], self.image_height, self.image_width)
                                   for o in observations]))
        return to_unit_range(np.concatenate(views, axis=2))[:, :, None]  # already resized: only joined

    @torch.inference_mode()
    def act_batch(self, observations: list[Observation]) -> np.ndarray:
        """Raw action chunks [B, H, A] for B observations (any mix of prompts)."""
        text, text_mask = self.prompts.batch([o.prompt for o in observations], self.device, self.dtype)
        states = torch.as_tensor(np.stack([np.asarray(o.state, dtype=np.float32) for o in observations]))
        batch = {
            "current_pixels": self.pixels(observations).to(self.device, self.vae.dtype),
            "proprio": self.state_norm.normalize(states.to(self.device)).to(self.dtype),
            "text": text,
            "text_mask": text_mask,
        }
        actions = self.predict(batch)
        return self.action_norm.denormalize(actions.float()).cpu().numpy()

    def act(self, observation: Observation) -> np.ndarray:
        """Raw action chunk [H, A] for one observation."""
        return self.act_batch([observation])[0]

    def predict_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1, H, W] -> the normalized latent, by the exact 2-D single-frame encode."""
        return encode_single_frame(self.vae, pixels)

    @torch.inference_mode()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalized actions [B, H, A] of a model batch; its `current_pixels` go through the VAE when it has no
        `current_latent`. The fast exact path: single-frame VAE encode, text K/V kept per prompt."""
        if "current_latent" not in batch:  # the one frame through the VAE's 2-D equivalent
            batch = dict(batch, current_latent=self.predict_latent(batch["current_pixels"]))
        with self._lock:
            return self.prompt_kv.predict_actions(batch)


def resize_one(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One camera image uint8 [h, w, 3] -> [height, width, 3], checked."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a camera image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image if image.shape[:2] == (height, width) else join_cameras([image[None]], height, width)[0]
