"""Argument types that the command lines share."""

import argparse


def positive(kind, unit: str | None = None):
    """An argparse type: `kind` of the text (int, float), refused unless above zero. With `unit`
    ("seconds") the messages name it: "must be more than 0 seconds, not 0"."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            if unit is None:
                raise
            raise argparse.ArgumentTypeError(f"'{text}' is not a number of {unit}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be more than 0 {unit}, not {text}" if unit
                                             else f"must be positive, not {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse
