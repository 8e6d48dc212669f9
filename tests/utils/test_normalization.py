"""The one normalisation constant pair is the one the pretrained Swin weights were trained with (timm's)."""

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from mtlora_deploy.utils.normalization import IMAGENET_MEAN, IMAGENET_STD


def test_normalization_is_timms_imagenet_default():
    assert IMAGENET_MEAN == IMAGENET_DEFAULT_MEAN and IMAGENET_STD == IMAGENET_DEFAULT_STD
