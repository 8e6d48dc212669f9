"""Input normalisation of the ImageNet-pretrained Swin weights, shared by the data pipeline and exported graphs.

The values are timm's ``IMAGENET_DEFAULT_MEAN``/``IMAGENET_DEFAULT_STD`` (what the Swin ``pretrained_cfg`` uses,
checked by a test). They live here, below both ``trainer`` and ``deploy``, so the data pipeline does not import timm
and ``deploy`` does not import the trainer.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
