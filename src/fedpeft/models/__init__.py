"""Frozen backbones: shipped models by name, or any local Hugging Face directory."""

from fedpeft.models.backbone import (
    BACKBONES,
    Backbone,
    available_backbones,
    load_backbone,
)

__all__ = ["BACKBONES", "Backbone", "available_backbones", "load_backbone"]
