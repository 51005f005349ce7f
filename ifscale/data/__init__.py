"""Data sets and synthetic noise."""

from ifscale.data.images import ImageData, load_images, stratified_subset
from ifscale.data.noise import apply_label_noise, mislabel, permute_references
from ifscale.data.text import ParallelSplit, read_parallel_text

__all__ = [
    "ImageData",
    "ParallelSplit",
    "apply_label_noise",
    "load_images",
    "mislabel",
    "permute_references",
    "read_parallel_text",
    "stratified_subset",
]
