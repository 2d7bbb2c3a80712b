"""The one error of ser-train: what is wrong (the file, row, speaker or flag) and what to do."""


class TrainError(ValueError):
    """Training cannot start or go on; the message names the problem and the way out."""
