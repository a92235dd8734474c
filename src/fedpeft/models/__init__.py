"""Frozen backbones: a registry of shipped models plus any local Hugging Face directory."""

from fedpeft.models.backbone import BACKBONES, Backbone, available_backbones, load_backbone

__all__ = ["BACKBONES", "Backbone", "available_backbones", "load_backbone"]
