"""Pad requests of different lengths into one batch, and cut the batch back per request."""

import numpy as np


def pad_and_stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Zero-pad arrays [b_i, ...] to the largest extent on every axis, then concatenate rows."""
    if len(arrays) == 1:
        return arrays[0]
    shape = np.max([a.shape for a in arrays], axis=0)
    shape[0] = sum(a.shape[0] for a in arrays)
    out = np.zeros(shape, dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        out[(slice(row, row + a.shape[0]),) + tuple(slice(0, n) for n in a.shape[1:])] = a
        row += a.shape[0]
    return out


def row_spans(counts: list[int]) -> list[slice]:
    edges = np.cumsum([0] + counts)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def valid_lengths(source: np.ndarray) -> np.ndarray:
    """Per-row valid length from a length tensor [b] / [b, 1] or a 0/1 mask [b, T]."""
    if source.ndim == 2 and source.shape[1] != 1:
        return source.sum(axis=1)
    return source.reshape(-1)


def split_rows(output: np.ndarray, span: slice, lengths: np.ndarray | None) -> np.ndarray:
    """One request's rows of a batched output, cut on axis 1 to the longest valid row."""
    part = output[span]
    if lengths is not None:
        part = part[:, : int(lengths[span].max())]
    return np.ascontiguousarray(part)
