"""The real tritonserver (bundled in nvidia-pytriton) serving the tiny export, over HTTP and gRPC."""

import concurrent.futures as futures
import time

import numpy as np
import pytest

from ser_triton.core.contract import LABELS
from tests.server_helpers import connect, infer, utterance

pytestmark = pytest.mark.server
PROTOCOLS = ["grpc", "http"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seconds", [0.4, 1.0, 3.3, 7.9])
def test_single_requests_match_the_reference(tiny_server, tiny_reference, protocol, seconds):
    audio = utterance(seconds, seed=int(seconds * 10))
    emotions, probabilities, transcripts = infer(connect(tiny_server, protocol), protocol, audio[None])
    expected, transcript = tiny_reference.predict(audio)
    np.testing.assert_allclose(probabilities[0], expected, atol=1e-4)
    assert transcripts == [transcript]
    assert emotions == [LABELS[int(np.argmax(expected))]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batched_request_matches_the_reference(tiny_server, tiny_reference, protocol):
    batch = np.stack([utterance(2.0, seed=s) for s in (1, 2, 3)])
    emotions, probabilities, transcripts = infer(connect(tiny_server, protocol), protocol, batch)
    for row, audio in enumerate(batch):
        expected, transcript = tiny_reference.predict(audio)
        np.testing.assert_allclose(probabilities[row], expected, atol=1e-4)
        assert transcripts[row] == transcript


@pytest.mark.parametrize("kind", ["silence", "burst", "loud_int16_scale"])
def test_silence_bursts_and_loud_audio_still_get_an_emotion(tiny_server, tiny_reference, kind):
    audio = {
        "silence": np.zeros(16000, np.float32),
        "burst": np.concatenate([np.zeros(8000), utterance(0.05, 1), np.zeros(8000)]).astype(np.float32),
        "loud_int16_scale": utterance(1.5, 4) * 32767,  # samples far outside [-1, 1] are accepted
    }[kind]
    emotions, probabilities, transcripts = infer(connect(tiny_server, "grpc"), "grpc", audio[None])
    expected, transcript = tiny_reference.predict(audio)
    assert emotions[0] in LABELS
    np.testing.assert_allclose(probabilities[0], expected, atol=1e-4)
    assert transcripts[0] == transcript


def executions(client, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model).model_stats[0]
    return stats.inference_count, stats.execution_count


def test_concurrent_varied_lengths_are_batched_without_changing_answers(tiny_server):
    lengths = [0.5, 3.1, 1.2, 6.0, 2.2, 0.9, 4.4, 1.7, 5.3, 2.8, 0.7, 3.6] * 2
    audios = [utterance(s, seed=i) for i, s in enumerate(lengths)]
    client = connect(tiny_server, "grpc")
    sequential = [infer(client, "grpc", a[None]) for a in audios]
    before = {m: executions(client, m) for m in ("acoustic_encoder", "asr", "text_encoder", "fusion_head")}
    with futures.ThreadPoolExecutor(len(audios)) as pool:
        concurrent = list(pool.map(lambda a: infer(connect(tiny_server, "grpc"), "grpc", a[None]), audios))
    for (e1, p1, t1), (e2, p2, t2) in zip(sequential, concurrent):
        np.testing.assert_allclose(p2, p1, atol=1e-4)
        assert t2 == t1 and e2 == e1
    batched = {}
    for model, (inferences, runs) in before.items():
        deadline = time.monotonic() + 10  # statistics are recorded just after the responses go out
        while executions(client, model)[0] - inferences < len(audios) and time.monotonic() < deadline:
            time.sleep(0.1)
        after_inferences, after_runs = executions(client, model)
        assert after_inferences - inferences == len(audios)
        batched[model] = (after_inferences - inferences) / (after_runs - runs)
    assert max(batched.values()) > 1.0, batched  # requests of different lengths really ran together


def test_server_metrics_are_served(tiny_server):
    import urllib.request

    text = urllib.request.urlopen(tiny_server.metrics_url, timeout=5).read().decode()
    assert 'nv_inference_request_success{model="ser"' in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("wanted", [["PROBABILITIES"], ["EMOTION"], ["TRANSCRIPT"], ["EMOTION", "TRANSCRIPT"],
                                    ["PROBABILITIES", "TRANSCRIPT"], ["WORDS"], ["TRANSCRIPT", "WORDS"]])
def test_any_subset_of_outputs_can_be_requested(tiny_server, protocol, wanted):
    from tests.server_helpers import MODULES

    module = MODULES[protocol]
    audio = module.InferInput("AUDIO", [1, 16000], "FP32")
    audio.set_data_from_numpy(utterance(1.0, 2)[None])
    result = connect(tiny_server, protocol).infer(
        "ser", [audio], outputs=[module.InferRequestedOutput(name) for name in wanted])
    for name in wanted:
        assert result.as_numpy(name) is not None and result.as_numpy(name).shape[0] == 1
