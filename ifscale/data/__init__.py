"""Data sets and synthetic noise."""

from ifscale.data.images import ImageData, load_images, stratified_subset
from ifscale.data.noise import apply_label_noise, mislabel

__all__ = ["ImageData", "apply_label_noise", "load_images", "mislabel", "stratified_subset"]
