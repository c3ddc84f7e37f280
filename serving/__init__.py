"""serving: a KServe v2 / Triton-compatible gRPC inference server for ONNX and PyTorch models."""

__version__ = "0.1.0"
SERVER_NAME = "serving"
