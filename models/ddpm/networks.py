"""The two networks of seed 004: phi (DeepSTORM-like) and Psi (the DDPM's conditional U-Net).

* :class:`KdeNet` (phi, appendix A.4): a low-resolution frame in, a kernel density
  estimate on a 4x finer grid out. Multi-scale context by dilated 3x3 convolutions, two
  x2 resize-convolutions (nearest-neighbour upsampling, then a convolution), three
  refinement blocks and a HardTanh to ``[0, 1]`` (at inference only: see ``forward``).
  Fully convolutional: any frame size.
* :class:`ConditionalUNet` (Psi): predicts the noise of ``y_t`` given ``t`` and phi's
  estimate, concatenated as a second input channel (as in the seed, after Saharia et al.):
  residual blocks with group normalisation and a sinusoidal timestep embedding, channel
  multipliers per resolution, self-attention at the lowest resolution.

Sizes are set by :class:`KdeNetConfig` and :class:`UNetConfig`; the defaults are small
enough to train on two CPU cores (the seed's multipliers ``(1, 2, 4, 8, 8)`` are a
``UNetConfig`` away). Training, weights and serving are not built yet (issue 14).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class KdeNetConfig:
    """Size of :class:`KdeNet`.

    Attributes
    ----------
    channels : int
        Feature channels throughout.
    dilations : tuple of int
        Dilation of each context-aggregation convolution.
    upsample : int
        Output grid refinement: 4 (two x2 stages), as in the seed.
    """

    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 4, 2, 1)
    upsample: int = 4


def _block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation),
                         nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.1))


class KdeNet(nn.Module):
    """phi: frame ``(B, 1, H, W)`` -> KDE ``(B, 1, 4 H, 4 W)`` in ``[0, 1]``.

    Parameters
    ----------
    config : KdeNetConfig
        Network size.
    """

    def __init__(self, config: KdeNetConfig | None = None) -> None:
        super().__init__()
        c = config or KdeNetConfig()
        if c.upsample not in (1, 2, 4, 8):
            raise ValueError(f"upsample must be 1, 2, 4 or 8, got {c.upsample}")
        self.config = c
        ch = c.channels
        self.context = nn.Sequential(_block(1, ch), *[_block(ch, ch, d) for d in c.dilations])
        stages = int(math.log2(c.upsample))
        self.up = nn.ModuleList([_block(ch, ch) for _ in range(stages)])
        self.refine = nn.Sequential(_block(ch, ch), _block(ch, ch), _block(ch, ch),
                                    nn.Conv2d(ch, 1, 1))

    def forward(self, frame: Tensor) -> Tensor:
        """The KDE estimate of a batch of normalised frames (see :func:`normalise_frames`)."""
        h = self.context(frame)
        for stage in self.up:
            h = stage(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
        out = self.refine(h)
        # The seed's HardTanh is applied at inference only: in training it has no gradient
        # below 0, and the KDE is 0 almost everywhere, so a network whose output dips
        # below 0 stops learning (a first CPU run sat at the all-zero loss for 600 steps).
        return out if self.training else nn.functional.hardtanh(out, 0.0, 1.0)


def normalise_frames(frames: Tensor) -> Tensor:
    """Frames as the networks see them: background (median) removed, robust peak scaled to 1.

    Parameters
    ----------
    frames : Tensor, shape (B, H, W)
        Frames in photo-electrons or ADU (any offset and gain: both are removed).

    Returns
    -------
    Tensor, shape (B, 1, H, W), float32
        ``(x - median) / (q99.9 - median)`` per frame, the scale at least 1e-6.
    """
    x = frames.to(torch.float32).flatten(1)
    med = x.median(dim=1, keepdim=True).values
    top = torch.quantile(x, 0.999, dim=1, keepdim=True)
    scale = (top - med).clamp_min(1e-6)
    return ((x - med) / scale).view(frames.shape[0], 1, *frames.shape[1:])


@dataclass(frozen=True)
class UNetConfig:
    """Size of :class:`ConditionalUNet`.

    Attributes
    ----------
    channels : int
        Channels at full resolution.
    multipliers : tuple of int
        Channel multiplier per resolution; each after the first halves the resolution
        (the seed: ``(1, 2, 4, 8, 8)``).
    attention_heads : int
        Heads of the self-attention at the lowest resolution (0: none).
    time_dim : int
        Width of the timestep embedding.
    """

    channels: int = 16
    multipliers: tuple[int, ...] = (1, 2, 4, 8)
    attention_heads: int = 4
    time_dim: int = 128


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer steps (the Transformer's position code), ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class _Attention(nn.Module):
    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class ConditionalUNet(nn.Module):
    """Psi: ``eps(y_t, t, condition)`` for KDE maps ``(B, 1, H, W)``.

    ``H`` and ``W`` must be divisible by ``2 ** (len(multipliers) - 1)``: 80 x 80 (the
    seed's 20 x 20 frames at 4x) allows up to five resolutions (80 / 16 = 5).

    Parameters
    ----------
    config : UNetConfig
        Network size.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        c = config or UNetConfig()
        self.config = c
        chans = [c.channels * m for m in c.multipliers]
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.time_dim), nn.SiLU(),
                                      nn.Linear(c.time_dim, c.time_dim))
        self.stem = nn.Conv2d(2, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        prev = chans[0]
        for k, ch in enumerate(chans):
            self.down.append(_ResBlock(prev, ch, c.time_dim))
            prev = ch
            if k < len(chans) - 1:
                self.pool.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = _ResBlock(prev, prev, c.time_dim)
        self.attn = _Attention(prev, c.attention_heads) if c.attention_heads else None
        self.mid2 = _ResBlock(prev, prev, c.time_dim)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for k in range(len(chans) - 1, -1, -1):
            self.up.append(_ResBlock(prev + chans[k], chans[k], c.time_dim))
            prev = chans[k]
            if k > 0:
                self.unpool.append(nn.Conv2d(prev, chans[k - 1], 3, padding=1))
                prev = chans[k - 1]
        self.out = nn.Sequential(nn.GroupNorm(min(8, prev), prev), nn.SiLU(),
                                 nn.Conv2d(prev, 1, 3, padding=1))

    def forward(self, y_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        """Predicted noise, the shape of ``y_t``."""
        factor = 2 ** (len(self.config.multipliers) - 1)
        if y_t.shape[-1] % factor or y_t.shape[-2] % factor:
            raise ValueError(f"y_t's height and width must be multiples of {factor}, "
                             f"got {tuple(y_t.shape[-2:])}")
        temb = self.time_mlp(timestep_embedding(t, self.config.time_dim))
        h = self.stem(torch.cat([y_t, condition], dim=1))
        skips = []
        for k, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)
            if k < len(self.pool):
                h = self.pool[k](h)
        h = self.mid(h, temb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, temb)
        for k, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if k < len(self.unpool):
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
                h = self.unpool[k](h)
        return self.out(h)
