"""Whole-batch tensor data loading: split, shuffle, augment and normalise without Python loops
over samples.

Randomness comes from CPU ``torch.Generator`` objects seeded by plain integer arithmetic of
(seed, epoch, stream), so epoch ``e`` draws the same numbers whether or not the run was resumed
before it, and CPU and GPU runs see the same permutation and augmentation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from prunebench.data.core import AUGMENTS
from prunebench.errors import DataError

_MASK64 = (1 << 64) - 1
CROP_PADDING = 4
#: images gathered, augmented and normalised per tensor op on CUDA (``chunk_batches=None``)
CUDA_CHUNK_IMAGES = 8192


def derive_seed(*values: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 steps; no Python ``hash``)."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (int(v) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def _generator(*values: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(derive_seed(*values))


def split_train_val(n: int, val_size: int | float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (sorted int64) of the train part and the validation part of ``range(n)``.

    ``val_size``: an int is a count, a float in (0, 1) a fraction of ``n`` (rounded, at least one
    sample left for training), 0 an empty validation part. The split depends only on
    (n, val_size, seed).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise DataError(f"split_train_val: n must be an int >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise DataError(f"split_train_val: seed must be an int, got {seed!r}")
    n = int(n)
    if isinstance(val_size, bool):
        raise DataError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    if isinstance(val_size, numbers.Integral):
        k = int(val_size)
        if k < 0 or (k > 0 and k >= n):
            raise DataError(
                f"val_size {k} must be 0 or a count in [1, {n - 1}] (training set has {n} samples)"
            )
    elif isinstance(val_size, numbers.Real):
        f = float(val_size)
        if f == 0.0:
            k = 0
        elif not 0.0 < f < 1.0:  # also rejects NaN
            raise DataError(f"val_size {val_size!r} as a fraction must lie in (0, 1) (or be 0)")
        else:
            k = min(round(f * n), max(n - 1, 0))
    else:
        raise DataError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    perm = torch.randperm(n, generator=_generator(int(seed), 0x5B1D))
    val = perm[:k].sort().values
    train = perm[k:].sort().values
    return train, val


def crop_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = CROP_PADDING
) -> torch.Tensor:
    """Random-crop (zero padding) and horizontal flip of a batch, vectorised.

    x: (B, C, H, W); offsets: (B, 2) int64 (row, col) in [0, 2*padding], the top-left corner of
    the HxW window in the padded image; flips: (B,) bool. One gather does crop and flip.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dev = x.device
    rows = offsets[:, 0:1] + torch.arange(h, device=dev)  # (B, H)
    cols = offsets[:, 1:2] + torch.arange(w, device=dev)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class Batching:
    """What every batch loader shares: batch size and chunking checks, the number of
    batches, and normalisation of uint8 (or [0, 255] float) images on the device.
    Subclasses set ``device``, ``num_samples``, ``drop_last`` and call :meth:`_batching`."""

    device: torch.device
    num_samples: int
    drop_last: bool

    def _batching(self, name: str, channels: int, batch_size: int, mean: Sequence[float],
                  std: Sequence[float], chunk_batches: int | None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"{name}: batch_size must be an int >= 1, got {batch_size!r}")
        if len(mean) != channels or len(std) != channels:
            raise DataError(
                f"{name}: mean/std need {channels} values, got {len(mean)}/{len(std)}"
            )
        if any(s <= 0 for s in std):
            raise DataError(f"{name}: std values must be > 0, got {tuple(std)}")
        if chunk_batches is None:
            chunk_batches = (max(1, CUDA_CHUNK_IMAGES // batch_size)
                             if self.device.type == "cuda" else 1)
        if isinstance(chunk_batches, bool) or not isinstance(chunk_batches, int) \
                or chunk_batches < 1:
            raise DataError(f"{name}: chunk_batches must be an int >= 1, got {chunk_batches!r}")
        self.batch_size = batch_size
        self.chunk_batches = chunk_batches
        shape = (1, channels, 1, 1)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(shape)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 255] float images -> normalised float32."""
        return (xb.to(torch.float32) / 255.0 - self._mean) / self._std


class BatchLoader(Batching):
    """Batches of (normalised float32 images, int64 labels) from uint8 tensors on ``device``.

    The data is moved to ``device`` once; each batch is gathered, augmented and normalised with
    whole-batch tensor ops. ``chunk_batches`` batches are processed by one op and then sliced
    (default: 1 on CPU, ~8k images on CUDA, where a kernel launch per op and batch costs more
    than the op): the batches are the same values either way (pure indexing and element-wise
    maths).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: str = "none",
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        chunk_batches: int | None = None,
    ) -> None:
        if x.dim() != 4 or x.dtype != torch.uint8:
            raise DataError(
                f"BatchLoader: x must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
            )
        if y.dim() != 1 or len(y) != len(x):
            raise DataError(f"BatchLoader: y must be (N,) with N={len(x)}, got {tuple(y.shape)}")
        if augment not in AUGMENTS:
            raise DataError(f"augment {augment!r} not allowed; allowed: {', '.join(AUGMENTS)}")
        self.device = torch.device(device)
        self._batching("BatchLoader", x.shape[1], batch_size, mean, std, chunk_batches)
        self.x = x.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_samples = len(x)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch``: a pure function of (data, seed, epoch)."""
        n = self.num_samples
        g = _generator(self.seed, int(epoch))
        if self.shuffle:
            order = torch.randperm(n, generator=g).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        offsets = flips = None
        if self.augment == "crop_flip":
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=g)
            flips = torch.rand(n, generator=g) < 0.5
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        bs, nb, step = self.batch_size, len(self), self.chunk_batches
        for first in range(0, nb, step):
            clo, chi = first * bs, min((first + step) * bs, n)
            idx = order[clo:chi]
            xc = self.x[idx]
            if offsets is not None and flips is not None:
                xc = crop_flip(xc, offsets[clo:chi], flips[clo:chi])
            xc, yc = self.normalise(xc), self.y[idx]
            for i in range(first, min(first + step, nb)):
                lo, hi = i * bs - clo, min((i + 1) * bs, n) - clo
                yield xc[lo:hi], yc[lo:hi]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
