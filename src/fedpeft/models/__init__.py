"""Frozen backbones: shipped models by name, or any local Hugging Face directory."""

from fedpeft.models.backbone import Backbone
from fedpeft.models.loading import BACKBONES, available_backbones, load_backbone
from fedpeft.models.vision import VisionBackbone  # its import registers them

__all__ = [
    "BACKBONES",
    "Backbone",
    "VisionBackbone",
    "available_backbones",
    "load_backbone",
]
