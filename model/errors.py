"""Errors of building the research model, each with a message that says what to do."""


class ModelError(Exception):
    """The research model could not be built."""


class SourceError(ModelError):
    """A pretrained network could not be loaded; the message says which and what to do."""


class CheckpointError(ModelError, ValueError):
    """The checkpoint does not match the model; the message names the offending keys."""
