"""Metadata that every runtime of the ecosystem reads on its own, written into each artifact format.

TF-free: flatbuffers (TFLite), a protobuf wire reader (ONNX) and ElementTree (OpenVINO IR) are enough
to read it back, so a lone artifact is self-sufficient on a device with only a runtime installed.
"""
