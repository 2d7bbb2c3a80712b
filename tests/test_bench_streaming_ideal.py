"""bench.streaming_ideal: the ideal server that the streaming stage's capacity is read against."""

import numpy as np
import pytest

from ser_triton.bench import streaming_ideal
from ser_triton.bench.workload import load_or_make


def test_the_floor_is_fitted_linear_in_the_length():
    assert streaming_ideal.fit_floor([(1.0, 0.3), (3.0, 0.7), (5.0, 1.1)]) == pytest.approx((0.1, 0.2))
    assert streaming_ideal.fit_floor([(2.0, 0.5), (2.0, 0.7)]) == pytest.approx((0.0, 0.3))  # one length
    assert streaming_ideal.fit_floor([(1.0, 0.5), (3.0, 0.4)])[1] == 0.0  # no negative cost


def test_ends_decided_together_queue_at_the_throughput_first_come_first_served():
    # (decided by the segmenter, known to the oracle, end of speech, audio seconds), two streams
    jobs = [(1.0, 0.5, 0.3, 2.0), (1.0, 0.5, 0.3, 2.0), (9.0, 8.5, 8.3, 2.0)]
    floor = (0.1, 0.2)  # an utterance of 2 s: 0.5 s alone; at 4 audio-s/s it holds the server 0.5 s
    segmenter = streaming_ideal.delays(jobs, 4.0, floor, "segmenter")
    assert segmenter == pytest.approx([1.2, 1.7, 1.2])  # the second waits for the first, the third finds it free
    assert streaming_ideal.delays(jobs, 4.0, floor, "oracle") == pytest.approx([0.7, 1.2, 0.7])
    slower = streaming_ideal.delays(jobs, 2.0, floor, "segmenter")
    assert slower == pytest.approx([1.2, 2.2, 1.2])  # half the throughput: twice the wait


def test_utterance_ends_come_from_the_servers_segmenter_after_the_speech(tmp_path):
    from ser_triton.export.repository import vad_package_file
    from ser_triton.serving.steps.segmentation import SegmentationRules, vad_session

    made = load_or_make(3, seed=1, root=tmp_path)
    found = streaming_ideal.utterances(made, 0, 20, vad_session(vad_package_file()))
    assert len(found) >= 3
    rules = SegmentationRules()
    for decided, known, speech_end, seconds in found:
        # the segmenter decides once the pause has lasted (its own lag and a 100 ms chunk besides)
        assert speech_end < known <= decided and rules.pause_seconds <= decided - speech_end < 1.2
        assert known - speech_end < rules.padding_seconds + 0.3 and 0.25 < seconds < 16  # padding, and its lag
    assert np.diff([job[0] for job in found]).min() > 0  # in audio order
