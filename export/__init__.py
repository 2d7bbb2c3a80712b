"""Turn the research model into verified ONNX networks and a Triton model repository."""
