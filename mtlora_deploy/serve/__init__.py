"""Serving what the toolkit builds with NVIDIA Triton Inference Server.

``repository`` writes a Triton model repository (the model step, a Python pre-step and post-step and the ensemble
that chains them) whose every ``config.pbtxt`` is checked against Triton's own schema (``schema``); ``server``
starts a real ``tritonserver`` on it; ``client`` talks to it over KServe v2 HTTP; ``load`` measures it under load.
The Python steps run ``utils/imaging.py``, the same file as local ``mtlora predict``.
"""
