"""The pixel path's augmentation: random shifts of the current frame."""

import torch

from pipeline.train.data import random_shift


def test_random_shift_moves_the_content_and_keeps_the_size():
    frames = torch.zeros(64, 3, 8, 8)
    frames[:, :, 4, 4] = 1.0
    shifted = random_shift(frames, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == frames.shape
    peaks = {tuple(int(v) for v in (s[0] == 1.0).nonzero()[0]) for s in shifted}
    assert len(peaks) > 10 and all(abs(r - 4) <= 2 and abs(c - 4) <= 2 for r, c in peaks)


def test_random_shift_takes_the_current_frame_as_a_one_frame_clip():
    frames = torch.zeros(16, 3, 1, 8, 8)
    frames[:, :, 0, 4, 4] = 1.0
    shifted = random_shift(frames, 1, torch.Generator().manual_seed(0))
    assert shifted.shape == frames.shape
    assert (shifted.sum(dim=(1, 2, 3, 4)) == 3.0).all()  # the marker moved, it was not cut or repeated
    assert not torch.equal(shifted, frames)
    assert torch.equal(random_shift(frames, 0, torch.Generator()), frames)
