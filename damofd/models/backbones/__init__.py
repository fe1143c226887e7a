"""SCRFD backbones (the DamoFD MasterNet lives in :mod:`damofd.search.masternet`)."""

from damofd.models.backbones.mobilenet import MobileNetV1
from damofd.models.backbones.resnet import BasicBlock, Bottleneck, ResNetV1e

__all__ = ["BasicBlock", "Bottleneck", "MobileNetV1", "ResNetV1e"]
