"""The diffusion transformer: patch sequence + trajectory features -> log D with an uncertainty.

After the EPFL report in ``shared/seeds`` (000): each frame of a small patch
sequence that follows one particle becomes one token, embedded by a small
residual CNN; a learned regression token is put in front, the 25 trajectory
features are fused into it, and a transformer encoder reads the sequence. The
regression token's output gives the mean and log standard deviation of a
Gaussian on ``log D*``.

What differs from the report, and why:

* **Units.** The network works in the units of the images: pixels and frames.
  It predicts ``D* = D dt / px^2`` (px^2 per frame), and every input is made
  dimensionless before it enters (:mod:`livespt.models.vit.inputs`), so one model
  serves any pixel size and frame rate; the physical D is ``D* px^2 / dt``. The
  report's unit handling was one of its failures on real data.
* **Always positive, always with an interval.** The output is ``log D*`` with a
  Gaussian negative log-likelihood, so D > 0 and every estimate has a 90 %
  interval (the report saw negative outputs on real data).
* **Where the crops are.** Patches are re-centred on each frame's localization,
  as a live tracker crops them; each token also gets the crop's placement
  (localized position relative to the window's mean, sub-pixel offset,
  localization precision) so that displacement between frames, lost by the
  re-centring, is not.
* **Variable length.** Windows of 5 to 30 frames in one model; frames without a
  localization (blinking, gaps) are masked out of attention.

Three variants share the code: ``"image+features"`` (the default), ``"image"``
(patch tokens and their placement, no hand-made features) and ``"features"``
(an MLP on the features and acquisition only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from livespt.models import _validate
from livespt.models.vit.inputs import N_ACQ, N_GEOM, N_STATS, PATCH_NORMS

VARIANTS = ("image+features", "image", "features")


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of :class:`DiffusionViT`.

    Attributes
    ----------
    variant : str
        ``"image+features"``, ``"image"`` or ``"features"``.
    patch_px : int
        Patch side in pixels (odd: the localized pixel is the centre).
    max_frames : int
        Longest window (positional embeddings), frames.
    n_features : int
        Inputs fused into the regression token: the 25 trajectory features and
        the two classical anchors of :func:`livespt.models.vit.inputs.prepare`.
    dim : int
        Token width.
    depth : int
        Transformer layers.
    heads : int
        Attention heads.
    mlp_dim : int
        Hidden width of each layer's feed-forward block.
    cnn_channels : int
        Channels of the first CNN stage (doubled once).
    dropout : float
        Dropout in the transformer layers.
    patch_norm : str
        How patches are normalised (:data:`livespt.models.vit.inputs.PATCH_NORMS`):
        ``window`` for weights trained before per-frame normalisation (the default,
        so their files load unchanged), ``frame`` for the domain-randomised ones.
    """

    variant: str = "image+features"
    patch_px: int = 15
    max_frames: int = 32
    n_features: int = 27
    dim: int = 64
    depth: int = 6
    heads: int = 4
    mlp_dim: int = 128
    cnn_channels: int = 16
    dropout: float = 0.0
    patch_norm: str = "window"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        _validate.positive_int("patch_px", self.patch_px, 5)
        _validate.positive_int("max_frames", self.max_frames, 2)
        _validate.positive_int("n_features", self.n_features)
        _validate.positive_int("depth", self.depth)
        _validate.positive_int("heads", self.heads)
        _validate.positive_int("mlp_dim", self.mlp_dim)
        _validate.positive_int("cnn_channels", self.cnn_channels)
        if self.patch_norm not in PATCH_NORMS:
            raise ValueError(f"patch_norm must be one of {PATCH_NORMS}, got {self.patch_norm!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return asdict(self)


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip; the second starts at zero (an identity block).

    No batch normalisation: each training batch shares one simulated acquisition,
    so batch statistics (and the running averages used at inference) would swing
    from batch to batch; a zero-initialised residual branch trains stably without.
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        if self.conv2.bias is not None:
            nn.init.zeros_(self.conv2.bias)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """Residual update of a (N, C, H, W) feature map."""
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class FrameEmbedding(nn.Module):
    """Residual CNN: one (P, P) patch -> one ``dim`` token.

    A stem at full resolution, then two stride-2 stages (P -> P/2 -> P/4) with a
    residual block each; cheap enough for CPU training (about 0.75 M
    multiply-adds per 15 x 15 patch at ``channels = 8``).
    """

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GELU(),
            _ResBlock(2 * c),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.GELU(),
            _ResBlock(4 * c),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * c, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Tokens (N, dim) of patches (N, 1, P, P)."""
        return self.net(x)


class DiffusionViT(nn.Module):
    """Transformer estimate of ``log D*`` (``D* = D dt / px^2``) with its uncertainty.

    Parameters
    ----------
    config : ViTConfig
        Architecture.

    Notes
    -----
    Inputs come from :func:`livespt.models.vit.inputs.prepare` (dimensionless):

    * ``images``: (B, T, P, P) background-subtracted, intensity-normalised patches;
    * ``geometry``: (B, T, N_GEOM) placement of each crop;
    * ``valid``: (B, T) bool, False for padding and frames without a localization;
    * ``features``: (B, n_features) trajectory features in px and frame units;
    * ``acquisition``: (B, N_ACQ) exposure/interval, PSF sigma in px, log precision.

    The features are standardised inside the model by buffers fitted on
    training data (:meth:`fit_feature_scaling`), saved with the weights.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.register_buffer("feat_mean", torch.zeros(c.n_features))
        self.register_buffer("feat_std", torch.ones(c.n_features))
        self.feat_mean: Tensor
        self.feat_std: Tensor
        # Out-of-distribution guard (livespt.models.vit.ood), fitted after training;
        # an infinite threshold (weights without a fitted guard) never flags.
        n_ood = c.n_features + N_ACQ + (N_STATS if c.variant != "features" else 0)
        self.register_buffer("ood_mean", torch.zeros(n_ood))
        self.register_buffer("ood_whiten", torch.eye(n_ood))
        self.register_buffer("ood_threshold", torch.tensor(float("inf")))
        self.register_buffer("ood_log_d_range", torch.tensor([-math.inf, math.inf]))
        self.register_buffer("ood_anchor_high", torch.tensor(math.inf))
        self.register_buffer("ood_stats_range", torch.tensor([[-math.inf] * N_STATS,
                                                              [math.inf] * N_STATS]))
        self.ood_mean: Tensor
        self.ood_whiten: Tensor
        self.ood_threshold: Tensor
        self.ood_log_d_range: Tensor
        self.ood_anchor_high: Tensor
        self.ood_stats_range: Tensor
        cond = N_ACQ + (c.n_features if c.variant != "image" else 0)
        if c.variant == "features":
            self.mlp = nn.Sequential(
                nn.Linear(cond, c.mlp_dim), nn.GELU(),
                nn.Linear(c.mlp_dim, c.mlp_dim), nn.GELU(),
                nn.Linear(c.mlp_dim, c.mlp_dim), nn.GELU(),
                nn.Linear(c.mlp_dim, 2),
            )
            return
        self.embed = FrameEmbedding(c.cnn_channels, c.dim)
        self.geom = nn.Linear(N_GEOM, c.dim)
        self.pos = nn.Parameter(torch.zeros(1, c.max_frames, c.dim))
        self.reg_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.cond = nn.Sequential(nn.Linear(cond, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        layer = nn.TransformerEncoderLayer(
            c.dim, c.heads, c.mlp_dim, dropout=c.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, 2)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.reg_token, std=0.02)

    @torch.no_grad()
    def fit_feature_scaling(self, features: Tensor) -> None:
        """Set the feature standardisation from a (N, n_features) sample of training inputs."""
        if features.ndim != 2 or features.shape[1] != self.config.n_features:
            raise ValueError(f"features must have shape (N, {self.config.n_features}), "
                             f"got {tuple(features.shape)}")
        f = features.to(self.feat_mean)
        self.feat_mean.copy_(f.mean(0))
        self.feat_std.copy_(f.std(0).clamp_min(1e-6))

    def forward(
        self,
        images: Tensor,
        geometry: Tensor,
        valid: Tensor,
        features: Tensor,
        acquisition: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Mean and log standard deviation of ``log D*``, each shape (B,)."""
        c = self.config
        cond_in = [acquisition]
        if c.variant != "image":
            f = ((features - self.feat_mean) / self.feat_std).clamp(-8.0, 8.0)
            cond_in.insert(0, f)
        cond = torch.cat(cond_in, dim=1)
        if c.variant == "features":
            out = self.mlp(cond)
        else:
            b, t, p, _ = images.shape
            if t > c.max_frames:
                raise ValueError(f"window of {t} frames is longer than max_frames {c.max_frames}")
            tok = self.embed(images.reshape(b * t, 1, p, p)).reshape(b, t, c.dim)
            tok = tok + self.geom(geometry) + self.pos[:, :t]
            reg = self.reg_token.expand(b, 1, c.dim) + self.cond(cond)[:, None, :]
            x = torch.cat([reg, tok], dim=1)
            pad = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], dim=1)
            x = self.encoder(x, src_key_padding_mask=pad)
            out = self.head(self.norm(x[:, 0]))
        mu = out[:, 0]
        log_sigma = out[:, 1].clamp(-5.0, 3.0)
        return mu, log_sigma


def gaussian_nll(mu: Tensor, log_sigma: Tensor, target: Tensor) -> Tensor:
    """Mean Gaussian negative log-likelihood of ``target`` (log D*), constant dropped."""
    return (log_sigma + 0.5 * ((target - mu) * torch.exp(-log_sigma)) ** 2).mean()


OOD_BUFFERS = ("ood_mean", "ood_whiten", "ood_threshold", "ood_log_d_range", "ood_anchor_high",
               "ood_stats_range")
"""Buffers of the out-of-distribution guard; files written before it lack them."""


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
