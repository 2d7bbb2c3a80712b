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


def padding_groups(widths: list[int], rows: list[int], slack: float, max_padded: int | None = None) -> list[list[int]]:
    """Group requests so that zero-padding each group costs at most `slack` extra work.

    widths: each request's padded extent (its longest row); rows: its batch size. Requests are
    taken shortest first; a group grows while max(width) * rows <= (1 + slack) * its real work,
    and, given `max_padded`, while max(width) * rows <= max_padded (a request larger than that
    alone runs alone). Returns lists of request indices. Padding a 1 s utterance to 15 s would
    cost 15x its work on a CPU, where a bigger batch buys little; similar lengths still run together.
    """
    groups: list[list[int]] = []
    work = 0
    for index in sorted(range(len(widths)), key=widths.__getitem__):
        if groups:
            group = groups[-1]
            padded = widths[index] * (sum(rows[i] for i in group) + rows[index])
            if padded <= (1 + slack) * (work + widths[index] * rows[index]) and (
                    max_padded is None or padded <= max_padded):
                group.append(index)
                work += widths[index] * rows[index]
                continue
        groups.append([index])
        work = widths[index] * rows[index]
    return groups
