"""Image classification, the reference task for the survey's Table 1 (installed as ``zoo.classification``)."""
from .data import ImageDataset, load_dataset
from .models import ARCHITECTURES, CifarResNet, build_model

__all__ = ["ARCHITECTURES", "CifarResNet", "ImageDataset", "build_model", "load_dataset"]
