"""Benchmark interactive segmentation methods with the simulated user of RITM / SimpleClick.

Run ``python -m m2n2.evaluate --help`` (or ``m2n2-evaluate``) for the command line.
"""

from .datasets import DatasetError, Instance, Sample, open_dataset
from .methods import build_methods
from .protocol import InstanceResult, clicks_to_reach, iou, next_click, simulate

__all__ = ["DatasetError", "Instance", "Sample", "open_dataset", "build_methods",
           "InstanceResult", "clicks_to_reach", "iou", "next_click", "simulate"]
