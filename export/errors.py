"""The export's errors: each message says what went wrong and what to do; `python -m ser_triton.export`
prints it as one line. Errors of building the model itself come from model.errors."""


class ExportError(Exception):
    """The export could not finish."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch (or a rewritten graph and the exported one) disagree past the tolerance."""


class TensorRTUnavailable(ExportError):
    """No TensorRT or no GPU here; the message says where plans can be built."""


class ModelUnavailable(ExportError):
    """The research model could not be built (a pretrained source or a checkpoint); the cause is
    the model.errors.ModelError with the details."""
