"""Classify audio with the served SER ensemble over Triton gRPC or HTTP."""

import http.client
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from ser_triton.core.audio import load_audio, prepare
from ser_triton.core.contract import (AUDIO, CLIENT_WINDOW_SECONDS, ENSEMBLE, GRPC_PORT, HTTP_PORT, LABELS,
                                      MAX_CHUNK_SECONDS, PROBABILITIES, SAMPLE_RATE, TRANSCRIPT)
from ser_triton.client.stream import LiveStream, StreamError
from ser_triton.core.result import Result, combine, make_segment, segment_bounds

DEFAULT_URLS = {"grpc": f"127.0.0.1:{GRPC_PORT}", "http": f"127.0.0.1:{HTTP_PORT}"}

_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "503"}
"""Statuses that mean "no server there right now" (gRPC code, HTTP status), worth retrying."""

_UNLOADED = "has no available versions"
"""Triton's answer for a model that it is loading or unloading: a server starting up, or stopping
(it unloads the ensemble before it closes its ports), so worth retrying like no server at all."""

_TIMED_OUT = {"StatusCode.DEADLINE_EXCEEDED"}

_CHECK_ADDRESS = f"check --url and --protocol (defaults: grpc {DEFAULT_URLS['grpc']}, http {DEFAULT_URLS['http']})"


class ClientError(RuntimeError):
    """The server could not be reached or refused a request; the message says what to do."""


class ServerUnreachable(ClientError):
    """No connection to the server, even after retrying."""


class NoSpeech(ClientError):
    """The speech segmenter found no speech in the recording: there is no emotion to give."""


SEGMENTERS = ("fixed", "speech")


def default_segmenter(protocol: str) -> str:
    """How recordings longer than the window are cut unless told, by SERClient and ser-infer alike:
    where the speaker pauses ("speech", the server's segmenter, so each segment is one utterance and
    silence does not vote) over gRPC, the protocol with streams; equal windows ("fixed") over HTTP."""
    return "speech" if protocol == "grpc" else "fixed"


GRPC_RESOLVERS = ("dns", "ipv4", "ipv6", "unix")
"""gRPC target schemes (dns:///name:port, ipv4:a:p,b:q, ...): names that may stand for several servers."""

ROUND_ROBIN = {"grpc.lb_policy_name": "round_robin"}
"""The default gRPC channel options' policy: requests rotate over every address the target resolves
to (the pods behind a headless Service, say), not over connections; one address works as before."""


def _target(url: str, protocol: str) -> str:
    """host:port for the Triton clients (a pasted http:// or grpc:// prefix is dropped); over gRPC
    also a gRPC target such as dns:///ser-triton-headless:8001, passed on as it is."""
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("http", "grpc"):
        return rest.rstrip("/")
    if url.partition(":")[0] in GRPC_RESOLVERS:
        if protocol != "grpc":
            raise ValueError(f"{url!r} is a gRPC target: use it with the grpc protocol, or give the http "
                             f"protocol one host:port (like {DEFAULT_URLS['http']}, or a load balancer's)")
        return url
    if separator:
        raise ValueError(f"give the server as host:port (like {DEFAULT_URLS['grpc']}) or as a gRPC target "
                         f"(like dns:///ser-triton-headless:8001), not {url!r}")
    return url


def _read(source, sample_rate: int | None) -> tuple[np.ndarray, str]:
    """Server-ready samples and a default name for a path, file bytes or array."""
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("give sample_rate with an array of samples")
        return prepare(source, sample_rate), "<array>"
    if sample_rate is not None:
        raise ValueError("sample_rate is only for arrays: files carry their own")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return load_audio(bytes(source)), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        return load_audio(Path(source)), os.fspath(source)
    raise TypeError(f"source must be a path, file bytes or a numpy array, not {type(source).__name__}")


def file_chunks(source, chunk_seconds: float = 0.1, realtime: bool = False):
    """A recording's samples (core.audio.load_audio: any format, at SAMPLE_RATE) in chunks; with
    `realtime`, each chunk no sooner than its audio would have arrived live."""
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, not {chunk_seconds}")
    audio, _ = _read(source, None)
    size = max(1, round(chunk_seconds * SAMPLE_RATE))
    began = time.monotonic()
    for start in range(0, audio.size, size):
        if realtime:
            time.sleep(max(0.0, began + (start + size) / SAMPLE_RATE - time.monotonic()))
        yield audio[start:start + size]


@dataclass(frozen=True)
class ClientSettings:
    """Everything a SERClient is made with (SERClient.__init__ documents each, with its default),
    checked once. classify_many's per-request clients are made from this one record, so an option
    added to the client cannot be left behind when it is cloned."""
    url: str | None
    protocol: str
    timeout: float
    window_seconds: float
    retries: int
    backoff: float
    grpc_options: Mapping[str, object] | None
    api_key: str | None
    tls: bool
    tls_ca_certificate: str | os.PathLike | None
    segmenter: str

    def __post_init__(self):
        if self.protocol not in DEFAULT_URLS:
            raise ValueError(f"protocol must be 'grpc' or 'http', not {self.protocol!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")
        if self.grpc_options and self.protocol != "grpc":
            raise ValueError("grpc_options are gRPC channel arguments: use them with the grpc protocol")
        # frozen: the checked, normalised values are set the one way a frozen dataclass allows
        object.__setattr__(self, "url", _target(self.url or DEFAULT_URLS[self.protocol], self.protocol))
        object.__setattr__(self, "grpc_options", MappingProxyType(dict(self.grpc_options or {})))
        if self.tls_ca_certificate is not None and not self.tls:
            raise ValueError("tls_ca_certificate checks a TLS server: use it with tls=True (--tls)")
        if self.tls_ca_certificate is not None and not Path(self.tls_ca_certificate).is_file():
            raise ValueError(f"the CA certificate {self.tls_ca_certificate} does not exist")
        if self.api_key is not None and (not self.api_key or any(c.isspace() for c in self.api_key)):
            raise ValueError("the API key must be one word without spaces")
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {', '.join(SEGMENTERS)}, not {self.segmenter!r}")
        if self.segmenter == "speech" and self.protocol != "grpc":
            raise ValueError("the speech segmenter streams over gRPC: use the grpc protocol, or the fixed segmenter")

    def arguments(self) -> dict:
        """SERClient's keyword arguments that make a client with these settings."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


class SERClient:
    """One connection to the server. Not thread-safe: classify_many makes its own per request."""

    def __init__(self, url: str | None = None, protocol: str = "grpc", timeout: float = 60.0,
                 window_seconds: float = CLIENT_WINDOW_SECONDS, retries: int = 3, backoff: float = 1.0,
                 grpc_options: Mapping[str, object] | None = None, *, api_key: str | None = None,
                 tls: bool = False, tls_ca_certificate: str | os.PathLike | None = None,
                 segmenter: str | None = None):
        """`url`: host:port, or over gRPC any gRPC target (dns:///host:port balances over every
        address the name resolves to). `grpc_options`: gRPC channel arguments, added to (and
        overriding) this client's: unlimited message sizes and the round_robin policy.
        `api_key`: sent as `Authorization: Bearer KEY`, for an edge that requires client keys.
        `tls`: connect over TLS, checking the server's certificate against the system's CAs or
        `tls_ca_certificate` (a PEM file: a private CA's, or a self-signed certificate).
        `segmenter`: how audio longer than `window_seconds` is cut: "speech", where the speaker
        pauses (streamed to the server's speech segmenter at full speed, gRPC only): each segment
        one utterance, and silence does not vote; "fixed", equal windows of at most that. None:
        default_segmenter(protocol), speech over gRPC and fixed over HTTP, as ser-infer."""
        self.settings = ClientSettings(url=url, protocol=protocol, timeout=timeout, window_seconds=window_seconds,
                                       retries=retries, backoff=backoff, grpc_options=grpc_options, api_key=api_key,
                                       tls=tls, tls_ca_certificate=tls_ca_certificate,
                                       segmenter=segmenter or default_segmenter(protocol))
        self._headers = {"authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        self._module = grpcclient if self.settings.protocol == "grpc" else httpclient
        self._triton = None

    def __enter__(self) -> "SERClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._triton is not None:
            self._triton.close()
            self._triton = None

    def _clone(self) -> "SERClient":
        """A client of its own (a connection of its own) with the same settings."""
        return SERClient(**self.settings.arguments())

    def channel_arguments(self) -> list[tuple[str, object]]:
        """What the gRPC channel is opened with: the defaults below, then `grpc_options`."""
        return list({
            "grpc.max_send_message_length": MAX_GRPC_MESSAGE_SIZE,
            "grpc.max_receive_message_length": MAX_GRPC_MESSAGE_SIZE,
            **ROUND_ROBIN,
            **self.settings.grpc_options,
        }.items())

    def _connection(self):
        if self._triton is None:
            settings = self.settings
            certificate = None if settings.tls_ca_certificate is None else os.fspath(settings.tls_ca_certificate)
            if settings.protocol == "grpc":
                self._triton = grpcclient.InferenceServerClient(settings.url, channel_args=self.channel_arguments(),
                                                                ssl=settings.tls, root_certificates=certificate)
            else:
                self._triton = httpclient.InferenceServerClient(
                    settings.url, connection_timeout=settings.timeout, network_timeout=settings.timeout,
                    ssl=settings.tls, ssl_options=None if certificate is None else {"ca_certs": certificate})
        return self._triton

    def _deadline(self) -> dict:
        """Each call's keyword arguments: its deadline (gRPC) and the client key's header."""
        return {"client_timeout": self.settings.timeout, "headers": self._headers} if self.settings.protocol == "grpc" \
            else {"headers": self._headers}

    def ready(self) -> bool:
        """Whether the server is up and the ensemble loaded (one try, no retries)."""
        try:
            connection = self._connection()
            return bool(connection.is_server_ready(**self._deadline())
                        and connection.is_model_ready(ENSEMBLE, **self._deadline()))
        except (InferenceServerException, OSError):
            self.close()
            return False

    def _infer_once(self, audio: np.ndarray) -> tuple[np.ndarray, str]:
        audio_input = self._module.InferInput(AUDIO, [1, audio.size], "FP32")
        audio_input.set_data_from_numpy(audio[np.newaxis])
        # make_segment takes the label from the probabilities, so EMOTION need not travel
        outputs = [self._module.InferRequestedOutput(name) for name in (PROBABILITIES, TRANSCRIPT)]
        answer = self._connection().infer(ENSEMBLE, [audio_input], outputs=outputs, **self._deadline())
        probabilities = answer.as_numpy(PROBABILITIES).reshape(-1)
        if probabilities.size != len(LABELS):
            raise ClientError(
                f"the server at {self.settings.url} returned {probabilities.size} probabilities, not {len(LABELS)}: "
                f"is it serving the {ENSEMBLE!r} ensemble of this version?"
            )
        transcript = answer.as_numpy(TRANSCRIPT).reshape(-1)[0]
        return probabilities, transcript.decode("utf-8") if isinstance(transcript, bytes) else str(transcript)

    def _infer(self, audio: np.ndarray) -> tuple[np.ndarray, str]:
        """One segment, retrying with exponential backoff while the server cannot be reached."""
        for attempt in range(self.settings.retries + 1):
            try:
                return self._infer_once(audio)
            except InferenceServerException as error:
                if error.status() in _TIMED_OUT:
                    raise self._timed_out() from None
                if error.status() not in _UNAVAILABLE and _UNLOADED not in (error.message() or ""):
                    raise ClientError(f"the server at {self.settings.url} refused the request: "
                                      f"{error.message()}") from None
                reason = error.message()
            except TimeoutError:
                raise self._timed_out() from None
            except http.client.HTTPException as error:
                self.close()
                raise ClientError(
                    f"the server at {self.settings.url} does not answer http ({error}): {_CHECK_ADDRESS}"
                ) from None
            except OSError as error:
                reason = error.strerror or str(error)
            self.close()
            if attempt < self.settings.retries:
                time.sleep(self.settings.backoff * 2**attempt)
        tries = "once" if self.settings.retries == 0 else f"{self.settings.retries + 1} times"
        raise ServerUnreachable(
            f"cannot reach the SER server at {self.settings.url} over {self.settings.protocol} "
            f"(tried {tries}: {reason}): "
            f"is the server running? start it with `make serve`; or {_CHECK_ADDRESS}"
        )

    def _timed_out(self) -> ClientError:
        self.close()
        return ClientError(
            f"no answer from the SER server at {self.settings.url} within {self.settings.timeout:g} s: "
            f"for long audio raise --timeout; or {_CHECK_ADDRESS}"
        )

    def _classify_samples(self, audio: np.ndarray, name: str) -> Result:
        started = time.perf_counter()
        if self.settings.segmenter == "speech" and audio.size > self.settings.window_seconds * SAMPLE_RATE:
            largest = int(MAX_CHUNK_SECONDS * SAMPLE_RATE)  # full speed: the largest chunks a stream takes
            events = self.stream(audio[first:first + largest] for first in range(0, audio.size, largest))
            segments = [event.segment() for event in events if event.event == "utterance"]
            if not segments:
                raise NoSpeech(f"no speech found in its {audio.size / SAMPLE_RATE:.1f} s of audio")
            return combine(name, segments, latency=time.perf_counter() - started, duration=audio.size / SAMPLE_RATE)
        segments = []
        for start, end in segment_bounds(audio.size, self.settings.window_seconds):
            probabilities, transcript = self._infer(audio[start:end])
            segments.append(make_segment(start, end, probabilities, transcript))
        return combine(name, segments, latency=time.perf_counter() - started)

    def classify(self, source, sample_rate: int | None = None, name: str | None = None) -> Result:
        """Emotion of a recording of any length: a path, a file's bytes, or samples with their rate.

        Audio longer than window_seconds is sent as segments; the result is their
        duration-weighted combination, with every segment's own result in `segments`.
        """
        audio, default_name = _read(source, sample_rate)
        return self._classify_samples(audio, name or default_name)

    def stream(self, chunks, sample_rate: int = SAMPLE_RATE, segmentation: dict | None = None):
        """Events of a live stream as they come (core.result.StreamEvent: speech_start, interim,
        utterance), from `chunks`: an iterable of sample arrays ([samples] or [samples, channels],
        integer or float PCM) at `sample_rate`, of any size; iterating may block (a microphone).
        `segmentation`: rules that differ from the server's for this stream
        (serving.steps.segmentation.SegmentationRules). Over gRPC only; ClientError if the server
        ends the stream (a bad chunk, its stream limit, a replica that died)."""
        if self.settings.protocol != "grpc":
            raise ValueError("live streams go over gRPC (bidirectional streaming): use protocol='grpc'")
        settings = self.settings
        connection = {"channel_args": self.channel_arguments(), "ssl": settings.tls,
                      "root_certificates": None if settings.tls_ca_certificate is None
                      else os.fspath(settings.tls_ca_certificate)}
        live = LiveStream(settings.url, chunks, sample_rate, settings.timeout, self._headers, connection, segmentation)
        try:
            yield from live
        except StreamError as error:
            raise ClientError(f"the stream to {self.settings.url} ended: {error}") from None

    def stream_file(self, source, realtime: bool = False, chunk_seconds: float = 0.1,
                    segmentation: dict | None = None):
        """stream() of a recording (a path or file bytes), in chunks of `chunk_seconds`; with
        `realtime`, paced at the recording's own speed, as a live call would arrive."""
        return self.stream(file_chunks(source, chunk_seconds, realtime), SAMPLE_RATE, segmentation)

    def classify_many(self, sources, concurrency: int = 4, *, sample_rate: int | None = None,
                      names=None, on_result=None) -> list:
        """classify() each source with up to `concurrency` requests in flight.

        Returns, in input order, a Result or the exception that stopped that item.
        `on_result(index, result_or_exception)` is called in this thread as each one finishes.
        Once the server has proved unreachable, the remaining items fail without waiting again.
        """
        sources = list(sources)
        names = list(names) if names is not None else [None] * len(sources)
        unreachable: list[str] = []

        def work(source, name):
            audio, default_name = _read(source, sample_rate)
            if unreachable:
                raise ServerUnreachable(unreachable[0])
            with self._clone() as client:
                try:
                    return client._classify_samples(audio, name or default_name)
                except ServerUnreachable as error:
                    unreachable.append(str(error))
                    raise

        results: list = [None] * len(sources)
        pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="ser-client")
        try:
            futures = {pool.submit(work, source, name): index
                       for index, (source, name) in enumerate(zip(sources, names))}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    results[index] = future.result()
                except Exception as error:
                    results[index] = error
                if on_result is not None:
                    on_result(index, results[index])
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return results
