"""The config parameters the steps read: their keys, written by export.repository."""

INPUT_ROLES = "input_roles"
OUTPUT_ROLES = "output_roles"
"""JSON {role: tensor name} of a Python step's inputs and outputs (roles: core.specs)."""

# onnx_network (every network on the cpu target)
ONNX_FILE = "onnx_file"
INTRA_OP_THREADS = "intra_op_threads"
PADDING_SLACK = "padding_slack"
RUNTIME = "runtime"
"""onnxruntime or openvino (serving.steps.runtime)."""
RUNTIME_PRECISION = "runtime_precision"
"""The runtime's inference precision (f32, or bf16 for OpenVINO)."""
VALID_LENGTHS = "valid_lengths"
"""JSON {output: the input or output that says how much of its variable axis is valid}."""
MAX_BATCH_SAMPLES = "max_batch_samples"
"""Audio networks: most padded samples (rows x longest) in one run. A longer request runs alone,
and ONNX Runtime's arena gives back what it grew for it."""

# audio_input
SAMPLE_RATE = "sample_rate"
MIN_SAMPLES = "min_samples"
MAX_AUDIO_SECONDS = "max_audio_seconds"

# ctc_tokenize
TOKENIZER_FILE = "tokenizer_file"
CTC_VOCAB_FILE = "ctc_vocab_file"

# emotion_label
LABELS = "labels"

# stream (the streaming model, contract.STREAM)
VAD_FILE = "vad_file"
"""Silero VAD's ONNX file, next to model.py."""
VAD_TENSORS = "vad_tensors"
"""JSON {role: name} of Silero VAD's tensors (core.specs.vad_spec; the next state's role: next_state)."""
SEGMENTATION_RULES = "segmentation_rules"
"""JSON {rule: value} that changes the defaults of steps.segmentation.SegmentationRules."""
MAX_STREAMS = "max_streams"
"""Streams served at once; past it a new stream gets an error at its first chunk."""
STREAM_IDLE_SECONDS = "stream_idle_seconds"
"""A stream with no chunk for this long is ended and its state freed."""
MAX_CHUNK_SECONDS = "max_chunk_seconds"
STREAM_METRICS = "stream_metrics"
"""JSON {"live": the name of the live streams' gauge, "ended": that of the ended streams' counter}."""
CLASSIFIER = "classifier"
"""JSON {"model": the ensemble, "audio"/"probabilities"/"transcript"/"label": its tensors}."""
