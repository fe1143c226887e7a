"""Detector backbones: the DamoFD :class:`MasterNet` (built from a structure string) and the SCRFD
MobileNetV1 / ResNetV1e."""

from damofd.models.backbones.masternet import MasterNet
from damofd.models.backbones.mobilenet import MobileNetV1
from damofd.models.backbones.resnet import BasicBlock, Bottleneck, ResNetV1e

__all__ = ["BasicBlock", "Bottleneck", "MasterNet", "MobileNetV1", "ResNetV1e"]
