"""The served ensemble's public contract: the one place that names it.

Export, the generated Triton configs, the Python-backend steps (through config parameters),
the client and the tests all read these values; nothing else spells them out.
"""

SAMPLE_RATE = 16_000
"""Samples per second of the audio the ensemble takes (mono float32 in [-1, 1])."""

LABELS = ("happy", "sad", "angry", "neutral")
"""Emotion labels in the fusion head's logit order."""

ENSEMBLE = "ser"
"""Name of the Triton ensemble that takes raw audio and returns emotions."""

AUDIO = "AUDIO"
"""Input: [1, samples] float32 at SAMPLE_RATE, mono."""
EMOTION = "EMOTION"
"""Output: the predicted emotion, one of LABELS. The client names the same value `label`
(`Result.label`, the `label` JSON key) and shows it in the `emotion` column of its table."""
PROBABILITIES = "PROBABILITIES"
"""Output: softmax over LABELS, in that order."""
TRANSCRIPT = "TRANSCRIPT"
"""Output: the greedy CTC transcript, upper case."""

MIN_SAMPLES = 400
"""Shortest audio the encoders accept: one 25 ms frame of the convolutional front end."""

MAX_SECONDS = 30.0
"""Longest audio the server accepts by default (attention memory grows with length squared)."""

CLIENT_WINDOW_SECONDS = 20.0
"""The client splits longer recordings into segments of at most this length."""

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
"""Where a server (or its edge) listens by default, as in Triton's containers; `make serve`'s
HTTP_PORT=, GRPC_PORT=, METRICS_PORT= change them."""

STREAM = "ser_stream"
"""Name of the streaming model: the audio of one live stream (a call) in chunks of any size, over
gRPC bidirectional streaming (ModelStreamInfer, one sequence ID per stream, its first chunk
flagged start and its last end); events out on the same stream, each utterance classified by
the ENSEMBLE."""
CHUNK = "AUDIO_CHUNK"
"""Stream input: [1, samples] float32 at SAMPLE_RATE, mono; any length up to MAX_CHUNK_SECONDS,
empty only on the end-of-stream request."""
CHUNK_RATE = "CHUNK_SAMPLE_RATE"
"""Stream input: [1, 1] int32, the chunk's sample rate; anything but SAMPLE_RATE ends the stream."""
EVENT = "EVENT"
"""Stream output: the event, one of EVENTS."""
START_SAMPLE = "START_SAMPLE"
END_SAMPLE = "END_SAMPLE"
"""Stream outputs: where the event's audio starts and ends, as sample indices from the stream's
start (exact; END_SAMPLE is -1 for speech_start). The client reports seconds = sample / SAMPLE_RATE."""
EVENTS = ("speech_start", "interim", "utterance")
"""speech_start: speech confirmed (its utterance's start); interim: the running utterance so far,
every few seconds of its audio; utterance: a finished utterance, with EMOTION, PROBABILITIES and
TRANSCRIPT as the ensemble gives them for that span of audio alone."""
MAX_CHUNK_SECONDS = 10.0
"""Longest chunk a stream may send at once."""
LIVE_STREAMS_METRIC = "ser_stream_live_streams"
"""The streaming model's gauge on each server's metrics port: the streams open now, their state held."""
ENDED_STREAMS_METRIC = "ser_stream_ended_streams"
"""Its counter of streams ended, by `reason` (serving/steps/stream.py END_REASONS)."""

MAX_STREAM_SECONDS = 4 * 3600.0
"""Longest live stream the edge lets through: it bounds a stream's whole body, as one request's."""

STREAM_SOCKET_PATH = "/v1/stream"
"""Live streams over a WebSocket, at the edge's HTTP port (wss where it has TLS), for clients without
gRPC: a JSON start message, binary audio frames, a JSON end; the events back as JSON text
(serving/stream_socket.py; the messages' schema: serving/web/ser-stream.schema.json)."""
STREAM_SOCKET_SUBPROTOCOL = "ser.v1"
"""The WebSocket subprotocol (Sec-WebSocket-Protocol) a client offers and the server selects."""
STREAM_SOCKET_KEY_PREFIX = "ser.key."
"""A client key may travel as one more offered subprotocol: this prefix and the key in base64url without
padding (browsers set no headers on a WebSocket); the edge checks it and removes it."""
