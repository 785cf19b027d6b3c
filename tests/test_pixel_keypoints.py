"""model.pixel_keypoints: FiLM lets the instruction choose which thing in the frame a keypoint follows."""

import pytest
import torch
from torch import nn

from model.pixel_keypoints import PixelKeypoints


def two_markers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A red and a green 3x3 marker at random places in a 16x16 frame; task 0 asks for the red one's (x, y),
    task 1 for the green one's. Frames [N, 3, 16, 16] in [-1, 1], one-hot tasks [N, 2], targets [N, 2]."""
    gen = torch.Generator().manual_seed(seed)
    frames = -torch.ones(n, 3, 16, 16)
    places = torch.randint(1, 15, (n, 2, 2), generator=gen)  # [sample, marker, (row, col)]
    for i in range(n):
        for marker, channel in enumerate([0, 1]):
            row, col = places[i, marker].tolist()
            frames[i, channel, row - 1:row + 2, col - 1:col + 2] = 1.0
    task = torch.arange(n) % 2
    chosen = places[torch.arange(n), task].float()
    targets = torch.stack([chosen[:, 1], chosen[:, 0]], 1) / 7.5 - 1.0
    return frames, nn.functional.one_hot(task, 2).float(), targets


def fit(condition_dim: int) -> float:
    """Keypoints -> a linear head beside the one-hot task; test error after a short fit."""
    torch.manual_seed(0)
    encoder = PixelKeypoints(8, condition_dim=condition_dim)
    head = nn.Linear(encoder.out_dim + 2, 2)
    frames, onehot, targets = two_markers(1024, seed=0)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(400):
        idx = torch.randint(0, len(frames), (32,), generator=gen)
        points = encoder(frames[idx], onehot[idx] if condition_dim else None)
        loss = (head(torch.cat([points, onehot[idx]], 1)) - targets[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, onehot, targets = two_markers(256, seed=2)
    with torch.no_grad():
        points = encoder(frames, onehot if condition_dim else None)
        return (head(torch.cat([points, onehot], 1)) - targets).pow(2).mean().item()


def test_conditioned_encoder_starts_as_the_plain_one():
    torch.manual_seed(0)
    plain = PixelKeypoints(8)
    film = PixelKeypoints(8, condition_dim=3)
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("film.") for key in missing)
    pixels = torch.rand(4, 3, 16, 32) * 2 - 1
    torch.testing.assert_close(film(pixels, torch.randn(4, 3)), plain(pixels))
    with pytest.raises(ValueError, match="needs its condition"):
        film(pixels)
    with pytest.raises(ValueError, match="takes none"):
        plain(pixels, torch.randn(4, 3))


def test_the_instruction_chooses_which_marker_is_read():
    """Without FiLM the keypoints cannot depend on the task, and a head linear in them cannot pick one marker."""
    with_film, without = fit(condition_dim=2), fit(condition_dim=0)
    assert with_film < 0.05, with_film
    assert without > 3 * with_film, (without, with_film)
