"""The reference code's ``MODEL.MTLORA`` options that this toolkit implements one way only.

Export writes these values; import refuses a checkpoint whose stored config sets any of them otherwise (named).
"""

from __future__ import annotations

from typing import Any

FIXED_MTLORA_OPTIONS: dict[str, Any] = {  # MODEL.MTLORA key -> the value this toolkit implements
    "TRAINABLE_SCALE_SHARED": False,
    "TRAINABLE_SCALE_PER_TASK": False,
    "INTERMEDIATE_SPECIALIZATION": False,
    "SPLIT_QKV": False,
    "SHARED_MODE": "matrix",
    "QKV_ENABLED": True,
    "PROJ_ENABLED": True,
    "FC1_ENABLED": True,
    "FC2_ENABLED": True,
}
