"""Compatibility with the reference MTLoRA code, above the model builder: its checkpoints in and out.

``keys``: the reference state-dict layout <-> ours, and loading a reference state dict into our model;
``checkpoint``: whole reference training checkpoints (safe reading, detecting their config, importing them);
``export``: writing a model trained here as a checkpoint + ``--cfg`` YAML the reference code evaluates;
``options``: the reference options this toolkit implements one way only (written on export, checked on import).
"""
