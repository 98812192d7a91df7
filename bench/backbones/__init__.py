"""Pretrained backbones shared by plugins (CLIP through open_clip)."""
