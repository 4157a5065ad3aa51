"""Tests of the face engine's parts: the descriptor network (parser, weight cache, numpy and ONNX paths)."""
