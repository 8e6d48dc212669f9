"""Runtimes behind one small interface: PyTorch eager/compiled, ONNX Runtime, TensorRT (one file each)."""
