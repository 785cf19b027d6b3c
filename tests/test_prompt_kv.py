"""Cross-attention K/V cached per prompt give the actions of the uncached inference path."""

from __future__ import annotations

import torch

from model.light_wam import build_model
from model.prompt_kv import PromptKV
from tests.test_model import one_thread, randomize_lora, tiny_batch, tiny_config  # noqa: F401


def test_cached_prompt_kv_gives_the_uncached_actions():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = build_model(cfg)
    randomize_lora(model)
    model = model.for_inference()
    batch = tiny_batch(cfg)  # two prompts, one with padding
    want = model.predict_actions(batch)
    cached = PromptKV(model)
    torch.testing.assert_close(cached.predict_actions(batch), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.predict_actions(batch), want)  # the uncached path is unchanged beside it

    # the next control step: same prompt, new state; the kept K/V are reused and still exact
    step = dict(batch, proprio=torch.rand_like(batch["proprio"]) * 2 - 1)
    kept = cached.blocks[0].attn2.processor.key
    got = cached.predict_actions(step)
    assert cached.blocks[0].attn2.processor.key is kept
    torch.testing.assert_close(got, model.predict_actions(step), rtol=1e-5, atol=1e-5)
    assert (got - want).abs().max() > 1e-4  # the state reached the actions

    # a new task: a different prompt replaces the K/V
    other = dict(step, text=torch.randn_like(batch["text"]))
    torch.testing.assert_close(cached.predict_actions(other), model.predict_actions(other), rtol=1e-5, atol=1e-5)
    assert cached.blocks[0].attn2.processor.key is not kept

    # two policies on one model: each step still attends to its own prompt
    PromptKV(model).predict_actions(batch)
    torch.testing.assert_close(cached.predict_actions(other), model.predict_actions(other), rtol=1e-5, atol=1e-5)
