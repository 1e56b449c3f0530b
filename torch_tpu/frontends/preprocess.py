"""Preprocessing config: how an image becomes a model input (used by calibration and test inputs alike).

The steps, in order, on float32 pixel values in [0, 255] (TPU-MLIR's ``model_transform`` convention):

1. decode (``torchvision.io``) to RGB;
2. pixel format: ``rgb`` keeps the channels, ``bgr`` reverses them, ``gray`` takes the ITU-R BT.601 luma
   ``Y = 0.299 R + 0.587 G + 0.114 B`` (OpenCV's ``COLOR_RGB2GRAY``);
3. resize to ``(H, W)`` with bilinear interpolation on pixel centres, no antialiasing
   (``x_src = (x_dst + 0.5) * w / W - 0.5``; OpenCV's ``INTER_LINEAR`` on float images). With
   ``keep_aspect_ratio`` the image is scaled by ``r = min(H / h, W / w)`` to ``(round(h r), round(w r))``
   and centred on an ``(H, W)`` canvas filled with ``pad_value`` (letterbox; the extra pixel of an odd
   margin goes to the bottom / right);
4. normalize per channel: ``y = (x - mean) * scale``;
5. layout: ``[1, C, H, W]`` (``nchw``) or ``[1, H, W, C]`` (``nhwc``).

The config is stored with a TOP graph as ``top.meta["preprocess"]`` (:meth:`PreprocessConfig.to_dict`).

Example:
    >>> cfg = PreprocessConfig(resize=(224, 224), mean=(123.675, 116.28, 103.53),
    ...                        scale=(0.0171, 0.0175, 0.0174))
    >>> PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from torch_tpu.errors import ConfigError, ModelFormatError

PIXEL_FORMATS = ("rgb", "bgr", "gray")
CHANNEL_FORMATS = ("nchw", "nhwc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _floats(value: Any, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    except (TypeError, ValueError):
        raise ConfigError(f"preprocess: {name}={value!r} is not a number or a list of numbers") from None
    if not values:
        raise ConfigError(f"preprocess: {name} is empty")
    return values


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How to turn an image into a model input; see the module doc for the exact formulas.

    Attributes:
        resize: ``(H, W)`` of the model input, or None to keep the image size.
        mean: per-channel value subtracted first (one value broadcasts to every channel).
        scale: per-channel factor applied after the subtraction: ``(x - mean) * scale``.
        pixel_format: ``rgb``, ``bgr`` or ``gray`` (channel order the model expects).
        channel_format: ``nchw`` or ``nhwc``.
        keep_aspect_ratio: letterbox instead of stretching.
        pad_value: pixel value of the letterbox margin (before normalization).
    """

    resize: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    scale: tuple[float, ...] = (1.0,)
    pixel_format: str = "rgb"
    channel_format: str = "nchw"
    keep_aspect_ratio: bool = False
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        if self.pixel_format not in PIXEL_FORMATS:
            raise ConfigError(f"preprocess: pixel_format={self.pixel_format!r}; choose one of {PIXEL_FORMATS}")
        if self.channel_format not in CHANNEL_FORMATS:
            raise ConfigError(f"preprocess: channel_format={self.channel_format!r}; choose one of {CHANNEL_FORMATS}")
        if self.resize is not None:
            try:
                size = tuple(int(v) for v in self.resize)
            except (TypeError, ValueError):
                raise ConfigError(f"preprocess: resize={self.resize!r} is not (H, W)") from None
            if len(size) != 2 or min(size) <= 0:
                raise ConfigError(f"preprocess: resize={self.resize!r} is not (H, W) with positive sizes")
            object.__setattr__(self, "resize", size)
        if self.keep_aspect_ratio and self.resize is None:
            raise ConfigError("preprocess: keep_aspect_ratio needs resize=(H, W)")
        object.__setattr__(self, "mean", _floats(self.mean, "mean"))
        object.__setattr__(self, "scale", _floats(self.scale, "scale"))
        object.__setattr__(self, "pad_value", float(self.pad_value))
        object.__setattr__(self, "keep_aspect_ratio", bool(self.keep_aspect_ratio))
        for name in ("mean", "scale"):
            n = len(getattr(self, name))
            if n not in (1, self.channels):
                raise ConfigError(f"preprocess: {name} has {n} values, {self.pixel_format} images have "
                                  f"{self.channels} channels")

    @property
    def channels(self) -> int:
        """Number of channels of the model input (1 for gray, else 3)."""
        return 1 if self.pixel_format == "gray" else 3

    # -- persistence -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {"resize": list(self.resize) if self.resize else None, "mean": list(self.mean),
                "scale": list(self.scale), "pixel_format": self.pixel_format,
                "channel_format": self.channel_format, "keep_aspect_ratio": self.keep_aspect_ratio,
                "pad_value": self.pad_value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"preprocess: unknown key(s) {unknown} (known: {sorted(known)})")
        kwargs = dict(data)
        if kwargs.get("resize") is not None:
            kwargs["resize"] = tuple(kwargs["resize"])
        return cls(**kwargs)

    # -- applying --------------------------------------------------------------------------------
    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Preprocess one decoded RGB image ``[3, h, w]`` (uint8 or float in [0, 255]) into a batch of one.

        Returns:
            float32 ``[1, C, H, W]`` or ``[1, H, W, C]``.
        """
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ConfigError(f"preprocess: expected an RGB or gray image [C, h, w], got {list(image.shape)}")
        x = image.to(torch.float32)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        if self.pixel_format == "bgr":
            x = x.flip(0)
        elif self.pixel_format == "gray":
            w = torch.tensor(_GRAY_WEIGHTS, dtype=torch.float32).view(3, 1, 1)
            x = (x * w).sum(0, keepdim=True)
        x = self._resize(x)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        scale = torch.tensor(self.scale, dtype=torch.float32).view(-1, 1, 1)
        x = ((x - mean) * scale).unsqueeze(0)
        if self.channel_format == "nhwc":
            x = x.permute(0, 2, 3, 1)
        return x.contiguous()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is None:
            return x
        H, W = self.resize
        h, w = x.shape[1:]
        if not self.keep_aspect_ratio:
            return _bilinear(x, H, W)
        r = min(H / h, W / w)
        nh, nw = max(1, min(H, round(h * r))), max(1, min(W, round(w * r)))
        top, left = (H - nh) // 2, (W - nw) // 2
        canvas = torch.full((x.shape[0], H, W), self.pad_value, dtype=torch.float32)
        canvas[:, top:top + nh, left:left + nw] = _bilinear(x, nh, nw)
        return canvas

    def load_image(self, path: str | os.PathLike) -> torch.Tensor:
        """Decode an image file and preprocess it (see :meth:`apply`).

        Raises:
            ModelFormatError: the file is missing or cannot be decoded.
        """
        from torchvision.io import ImageReadMode, decode_image, read_file

        path = str(path)
        if not os.path.isfile(path):
            raise ModelFormatError(path, "no such image file")
        try:
            image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError) as e:
            raise ModelFormatError(path, f"cannot decode the image ({e})") from None
        return self.apply(image)

    def load_folder(self, folder: str | os.PathLike) -> Iterator[torch.Tensor]:
        """Yield inputs from a folder in name order: preprocessed images, and ``.npy`` / ``.npz`` arrays as-is.

        An ``.npz`` yields each of its arrays in stored order. Pickled arrays are refused. Other files are
        skipped.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"preprocess: {folder} is not a folder")
        for f in sorted(folder.iterdir()):
            suffix = f.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                yield self.load_image(f)
            elif suffix in (".npy", ".npz"):
                yield from _load_arrays(f)


def _bilinear(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``[C, h, w]`` -> ``[C, H, W]`` bilinear on pixel centres, no antialias (OpenCV INTER_LINEAR)."""
    if tuple(x.shape[1:]) == (H, W):
        return x
    return F.interpolate(x.unsqueeze(0), size=(H, W), mode="bilinear", align_corners=False,
                         antialias=False).squeeze(0)


def _load_arrays(path: Path) -> Iterator[torch.Tensor]:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ModelFormatError(str(path), f"cannot read the array file ({e})") from None
    if isinstance(data, np.ndarray):
        yield torch.from_numpy(np.ascontiguousarray(data))
        return
    with data:
        for key in data.files:
            yield torch.from_numpy(np.ascontiguousarray(data[key]))


__all__ = ["CHANNEL_FORMATS", "PIXEL_FORMATS", "PreprocessConfig"]
