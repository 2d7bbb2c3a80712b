"""The Python steps' batching helpers: padding, per-request cuts, and length-aware grouping."""

import numpy as np

from ser_triton.serving.steps.batching import pad_and_stack, padding_groups, row_spans, split_rows, valid_lengths


def test_pad_and_stack_then_split_gives_each_request_its_rows():
    a, b = np.ones((1, 3, 2)), np.full((2, 5, 2), 2.0)
    batch = pad_and_stack([a, b])
    assert batch.shape == (3, 5, 2) and batch[0, 3:].sum() == 0
    lengths = valid_lengths(np.array([[3], [5], [4]]))
    first, second = (split_rows(batch, span, lengths) for span in row_spans([1, 2]))
    assert np.array_equal(first, a) and np.array_equal(second, b)
    assert valid_lengths(np.array([[1, 1, 0], [1, 0, 0]])).tolist() == [2, 1]


def test_padding_groups_bound_the_wasted_work():
    widths = [16000, 240000, 17000, 15500, 230000, 8000]
    rows = [1] * len(widths)
    groups = padding_groups(widths, rows, slack=0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(widths)))
    for group in groups:
        padded = max(widths[i] for i in group) * sum(rows[i] for i in group)
        assert padded <= 1.25 * sum(widths[i] * rows[i] for i in group)
    assert sorted(map(sorted, groups)) == [[0, 2, 3], [1, 4], [5]]
    assert padding_groups(widths, rows, slack=100.0) == [[5, 3, 0, 2, 4, 1]]  # unlimited: one batch
    assert all(len(g) == 1 for g in padding_groups([5, 6, 7], [1, 1, 1], slack=0.0))


def test_padding_groups_cap_the_padded_samples_of_a_run():
    """max_padded bounds what one run holds (its memory); a request larger than that runs alone."""
    widths, rows = [60000, 64000, 62000, 61000, 300000, 63000], [1, 1, 1, 2, 1, 1]
    groups = padding_groups(widths, rows, slack=100.0, max_padded=256000)
    assert sorted(i for g in groups for i in g) == list(range(len(widths)))
    for group in groups:
        padded = max(widths[i] for i in group) * sum(rows[i] for i in group)
        assert padded <= 256000 or group == [4], group
    assert [4] in groups and len(groups) == 3  # 6 rows of ~64000 samples: 4 rows, then 2
    assert padding_groups(widths, rows, slack=100.0) == [[0, 3, 2, 5, 1, 4]]  # no cap: one run


def test_padding_groups_never_exceed_the_cap_whatever_the_requests():
    """Over many random mixes of lengths, batch sizes, slacks and caps: each request runs exactly
    once; a run of more than one request holds at most the cap of padded samples; a request over
    the cap by itself runs alone."""
    over_without_cap = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        count = int(rng.integers(1, 12))
        widths = rng.integers(400, 480000, count).tolist()
        rows = rng.integers(1, 5, count).tolist()
        slack, cap = float(rng.choice([0.0, 0.25, 1.0, 100.0])), int(rng.integers(16000, 600000))
        groups = padding_groups(widths, rows, slack=slack, max_padded=cap)
        assert sorted(i for g in groups for i in g) == list(range(count)), seed
        for group in groups:
            padded = max(widths[i] for i in group) * sum(rows[i] for i in group)
            assert len(group) == 1 or padded <= cap, (seed, group, padded, cap)
        for index in range(count):
            if widths[index] * rows[index] > cap:
                assert [index] in groups, (seed, index)
        # the check above can see a run over the cap: without one, some of these mixes make one
        over_without_cap += any(len(g) > 1 and max(widths[i] for i in g) * sum(rows[i] for i in g) > cap
                                for g in padding_groups(widths, rows, slack=slack))
    assert over_without_cap > 20, over_without_cap
