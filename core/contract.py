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
