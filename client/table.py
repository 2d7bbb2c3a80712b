"""The command line's aligned table of results: file, emotion, the probabilities, the transcript."""

from ser_triton.core.contract import LABELS


class Table:
    """Aligned rows, written as results arrive; column widths come from the names known upfront."""

    def __init__(self, names):
        self.started = False
        self.file_width = max([len("file"), *map(len, names)])
        self.label_width = max(len("emotion"), *map(len, LABELS))
        self.score_widths = [max(5, len(label)) for label in LABELS]

    def header(self) -> str:
        scores = "  ".join(f"{label:>{width}}" for label, width in zip(LABELS, self.score_widths))
        return f"{'file':<{self.file_width}}  {'emotion':<{self.label_width}}  {scores}  transcript"

    def row(self, result) -> str:
        """The result's row, after the header when it is the first."""
        scores = "  ".join(f"{result.probabilities[label]:>{width}.3f}"
                           for label, width in zip(LABELS, self.score_widths))
        row = f"{result.file:<{self.file_width}}  {result.label:<{self.label_width}}  {scores}  {result.transcript}"
        if self.started:
            return row
        self.started = True
        return f"{self.header()}\n{row}"
