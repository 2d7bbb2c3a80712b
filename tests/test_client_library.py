"""client.library without a server: segmenting, retries, error mapping and ordering, on a fake Triton."""

import dataclasses
import inspect
import threading

import numpy as np
import pytest
import soundfile
from tritonclient.utils import InferenceServerException

from ser_triton.core.audio import AudioError
from ser_triton.core.contract import ENSEMBLE, LABELS, PROBABILITIES, SAMPLE_RATE, TRANSCRIPT
from ser_triton.client import library
from ser_triton.client.library import ClientError, ClientSettings, SERClient, ServerUnreachable
from ser_triton.core.result import combine, make_segment, segment_bounds


def fake_probabilities(samples: int) -> np.ndarray:
    logits = np.array([samples % 5, samples % 3, 1.0, 0.5])
    return (np.exp(logits) / np.exp(logits).sum()).astype(np.float32)


class FakeAnswer:
    def __init__(self, samples: int):
        self.outputs = {
            PROBABILITIES: fake_probabilities(samples)[None],
            TRANSCRIPT: np.array([[f"n{samples}".encode()]], dtype=object),
        }

    def as_numpy(self, name):
        return self.outputs[name]


class FakeTriton:
    """Answers from the request's length; `failures` are raised, one per call, before answering."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.calls = 0
        self.lock = threading.Lock()

    def infer(self, model, inputs, outputs=None, **kwargs):
        assert model == ENSEMBLE and len(inputs) == 1
        assert {output.name() for output in outputs} == {PROBABILITIES, TRANSCRIPT}  # the label comes from these
        batch, samples = inputs[0].shape()
        assert batch == 1 and inputs[0].datatype() == "FP32"
        with self.lock:
            self.calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        return FakeAnswer(samples)

    def is_server_ready(self, **kwargs):
        return True

    def is_model_ready(self, name, **kwargs):
        return name == ENSEMBLE

    def close(self):
        pass


@pytest.fixture
def triton(monkeypatch):
    fake = FakeTriton()
    monkeypatch.setattr(SERClient, "_connection", lambda self: fake)
    return fake


def unavailable():
    return InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")


def tone(seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.float32)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_short_audio_is_one_request(triton, protocol):
    result = SERClient(protocol=protocol).classify(tone(2.0), sample_rate=SAMPLE_RATE, name="x")
    assert triton.calls == 1
    assert result.file == "x" and result.duration == 2.0 and result.latency > 0
    assert result.transcript == f"n{2 * SAMPLE_RATE}"
    assert result.label == LABELS[int(np.argmax(fake_probabilities(2 * SAMPLE_RATE)))]
    assert len(result.segments) == 1


def test_long_audio_is_sent_in_windows_and_combined(triton):
    audio = tone(50.0)
    result = SERClient(window_seconds=20.0, segmenter="fixed").classify(audio, sample_rate=SAMPLE_RATE, name="long")
    bounds = segment_bounds(audio.size, 20.0)
    assert triton.calls == len(bounds) == 3
    expected = combine("long", [make_segment(a, b, fake_probabilities(b - a), f"n{b - a}") for a, b in bounds])
    assert result.segments == expected.segments
    assert result.probabilities == pytest.approx(expected.probabilities)
    assert (result.label, result.transcript, result.duration) == (expected.label, expected.transcript, 50.0)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_library_and_the_cli_cut_long_audio_the_same_way_by_default(protocol):
    """One default (library.default_segmenter): where the speaker pauses over gRPC, equal windows over
    HTTP; so a long file gets the same answer from SERClient and from ser-infer."""
    from ser_triton.client.infer import make_client, parse_args

    library_default = SERClient(protocol=protocol).settings.segmenter
    assert library_default == {"grpc": "speech", "http": "fixed"}[protocol]
    assert make_client(parse_args(["x.wav", "--protocol", protocol])).settings.segmenter == library_default
    assert SERClient(protocol=protocol)._clone().settings.segmenter == library_default
    assert SERClient(protocol="grpc", segmenter="fixed").settings.segmenter == "fixed"  # a choice still wins
    with pytest.raises(ValueError, match="speech segmenter streams over gRPC"):
        SERClient(protocol="http", segmenter="speech")


def test_by_default_long_audio_is_streamed_to_the_speech_segmenter(triton, monkeypatch):
    """Over gRPC a recording longer than the window goes to the server's segmenter, not into windows."""
    streamed = []

    def stream(self, chunks, sample_rate=SAMPLE_RATE, segmentation=None):
        streamed.append(sum(chunk.size for chunk in chunks))
        return iter(())

    monkeypatch.setattr(SERClient, "stream", stream)
    with pytest.raises(library.NoSpeech):
        SERClient(window_seconds=20.0).classify(tone(50.0), sample_rate=SAMPLE_RATE)
    assert streamed == [50 * SAMPLE_RATE] and triton.calls == 0


def test_paths_bytes_and_arrays_give_the_same_answer(triton, tmp_path):
    path = tmp_path / "tone.flac"
    soundfile.write(path, tone(1.5), SAMPLE_RATE)
    client = SERClient()
    by_path, by_str, by_bytes = client.classify(path), client.classify(str(path)), client.classify(path.read_bytes())
    by_array = client.classify(soundfile.read(path, dtype="int16")[0], sample_rate=SAMPLE_RATE)
    assert by_path.file == by_str.file == str(path)
    assert (by_bytes.file, by_array.file) == ("<bytes>", "<array>")
    assert by_path.probabilities == by_bytes.probabilities == by_array.probabilities


def test_an_array_needs_its_sample_rate(triton):
    with pytest.raises(ValueError, match="sample_rate"):
        SERClient().classify(tone(1.0))
    assert triton.calls == 0


def test_bad_audio_never_reaches_the_server(triton):
    with pytest.raises(AudioError, match="NaN"):
        SERClient().classify(np.full(SAMPLE_RATE, np.nan, np.float32), sample_rate=SAMPLE_RATE)
    assert triton.calls == 0


@pytest.mark.parametrize("failure", [unavailable(), ConnectionRefusedError(111, "Connection refused")])
def test_connection_failures_are_retried_then_reported_with_the_url(triton, failure):
    triton.failures = [failure] * 10
    client = SERClient("127.0.0.1:9", retries=2, backoff=0)
    with pytest.raises(ServerUnreachable) as caught:
        client.classify(tone(1.0), sample_rate=SAMPLE_RATE)
    assert triton.calls == 3
    assert "127.0.0.1:9" in str(caught.value) and "make serve" in str(caught.value)


def test_a_server_that_comes_back_is_used(triton):
    triton.failures = [unavailable(), ConnectionResetError(104, "reset")]
    result = SERClient(retries=3, backoff=0).classify(tone(1.0), sample_rate=SAMPLE_RATE)
    assert triton.calls == 3 and result.transcript == f"n{SAMPLE_RATE}"


@pytest.mark.parametrize("failure, message", [
    (InferenceServerException("audio too long", status="StatusCode.INVALID_ARGUMENT"), "audio too long"),
    (InferenceServerException("bad input", status="400"), "bad input"),
    (InferenceServerException("deadline", status="StatusCode.DEADLINE_EXCEEDED"), "no answer .* within 5 s"),
    (TimeoutError("timed out"), "no answer .* within 5 s"),
])
def test_server_errors_and_timeouts_are_not_retried(triton, failure, message):
    triton.failures = [failure] * 10
    with pytest.raises(ClientError, match=message) as caught:
        SERClient(timeout=5, retries=3, backoff=0).classify(tone(1.0), sample_rate=SAMPLE_RATE)
    assert not isinstance(caught.value, ServerUnreachable)
    assert triton.calls == 1


def test_classify_many_keeps_input_order_and_reports_failures_in_place(triton):
    lengths = [3.0, 1.0, 2.5, 0.5, 1.5, 4.0, 2.0, 0.7]
    sources = [tone(s) for s in lengths]
    sources.insert(3, np.zeros(0, np.float32))
    finished = []
    results = SERClient().classify_many(sources, concurrency=4, sample_rate=SAMPLE_RATE,
                                        names=[f"item{i}" for i in range(len(sources))],
                                        on_result=lambda index, outcome: finished.append(index))
    assert sorted(finished) == list(range(len(sources)))
    assert isinstance(results[3], AudioError)
    good = [r for i, r in enumerate(results) if i != 3]
    assert [r.file for r in good] == [f"item{i}" for i in range(len(sources)) if i != 3]
    assert [r.duration for r in good] == lengths


def test_classify_many_stops_waiting_once_the_server_is_unreachable(triton):
    triton.failures = [unavailable()] * 100
    results = SERClient(retries=2, backoff=0).classify_many([tone(1.0)] * 6, concurrency=1, sample_rate=SAMPLE_RATE)
    assert all(isinstance(r, ServerUnreachable) for r in results)
    assert triton.calls == 3


def test_ready_and_bad_settings(triton):
    assert SERClient().ready()
    with pytest.raises(ValueError, match="protocol"):
        SERClient(protocol="udp")
    with pytest.raises(ValueError, match="host:port"):
        SERClient("https://example:8001")
    assert SERClient("http://127.0.0.1:8000/", protocol="http").settings.url == "127.0.0.1:8000"


def test_ready_is_false_without_a_server():
    assert not SERClient("127.0.0.1:1").ready()
    assert not SERClient("127.0.0.1:1", protocol="http").ready()


class RecordingChannels:
    """Stands in for tritonclient.grpc.InferenceServerClient: records each channel's target and arguments."""

    def __init__(self):
        self.opened = []
        self.lock = threading.Lock()

    def __call__(self, url, channel_args=None, **kwargs):
        with self.lock:
            self.opened.append((url, dict(channel_args)))
        return FakeTriton()


@pytest.fixture
def channels(monkeypatch):
    recording = RecordingChannels()
    monkeypatch.setattr(library.grpcclient, "InferenceServerClient", recording)
    return recording


def test_grpc_channels_balance_round_robin_with_unlimited_messages(channels):
    SERClient("127.0.0.1:8001").classify(tone(1.0), sample_rate=SAMPLE_RATE)
    [(url, arguments)] = channels.opened
    assert url == "127.0.0.1:8001"
    assert arguments["grpc.lb_policy_name"] == "round_robin"
    assert arguments["grpc.max_send_message_length"] == arguments["grpc.max_receive_message_length"] == 2**31 - 1


def test_grpc_options_add_to_and_override_the_defaults_in_every_channel(channels):
    options = {"grpc.lb_policy_name": "pick_first", "grpc.keepalive_time_ms": 10_000}
    client = SERClient("dns:///ser-triton-headless.ser.svc.cluster.local:8001", grpc_options=options)
    client.classify_many([tone(1.0)] * 3, concurrency=2, sample_rate=SAMPLE_RATE)  # a channel per item
    assert len(channels.opened) == 3
    for url, arguments in channels.opened:
        assert url == "dns:///ser-triton-headless.ser.svc.cluster.local:8001"
        assert arguments["grpc.lb_policy_name"] == "pick_first" and arguments["grpc.keepalive_time_ms"] == 10_000
        assert arguments["grpc.max_receive_message_length"] == 2**31 - 1


@pytest.mark.parametrize("target", ["dns:///ser-triton-headless:8001", "dns://10.0.0.10/ser:8001",
                                    "ipv4:10.0.0.1:8001,10.0.0.2:8001", "ipv6:[::1]:8001", "unix:///run/triton.sock"])
def test_grpc_targets_are_kept_as_given(target):
    assert SERClient(target).settings.url == target


def test_grpc_only_settings_are_refused_over_http():
    with pytest.raises(ValueError, match="gRPC target: use it with the grpc protocol"):
        SERClient("dns:///ser-triton-headless:8000", protocol="http")
    with pytest.raises(ValueError, match="grpc_options .* grpc protocol"):
        SERClient("127.0.0.1:8000", protocol="http", grpc_options={"grpc.lb_policy_name": "round_robin"})
    with pytest.raises(ValueError, match="gRPC target"):
        SERClient("xds:///ser:8001")


def test_a_client_is_made_from_one_settings_record():
    """Every option of SERClient is a field of ClientSettings, by the same name and in the same order,
    so a clone made from the record cannot leave a new option behind."""
    parameters = list(inspect.signature(SERClient.__init__).parameters)[1:]
    assert parameters == [field.name for field in dataclasses.fields(ClientSettings)]


def test_a_clone_keeps_every_setting(tmp_path, monkeypatch):
    """classify_many's per-request clients carry each option, every one set away from its default here."""
    certificate = tmp_path / "ca.pem"
    certificate.write_text("not checked until a TLS connection")
    grpc = SERClient("10.0.0.1:9001", "grpc", 7.0, 12.0, 5, 0.25, {"grpc.keepalive_time_ms": 10_000},
                     api_key="k" * 16, tls=True, tls_ca_certificate=certificate, segmenter="speech")
    http = SERClient("10.0.0.1:9000", "http")
    defaults = {name: p.default for name, p in inspect.signature(SERClient.__init__).parameters.items()}
    changed = {name for name, value in grpc.settings.arguments().items() if value != defaults[name]}
    assert changed == set(defaults) - {"self", "protocol"} and http.settings.protocol != defaults["protocol"]
    for client in (grpc, http):
        clone = client._clone()
        assert clone is not client and clone.settings == client.settings and clone._headers == client._headers

    seen = []
    monkeypatch.setattr(SERClient, "_classify_samples", lambda self, audio, name: seen.append(self.settings) or name)
    assert grpc.classify_many([tone(1.0)] * 3, concurrency=2, sample_rate=SAMPLE_RATE) == ["<array>"] * 3
    assert seen == [grpc.settings] * 3
