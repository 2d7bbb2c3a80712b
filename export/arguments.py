"""The deployment flags shared by `python -m ser_triton.export` and `python -m ser_triton.export.refresh` (make steps)."""

import argparse
import dataclasses
import json

from ser_triton.core.cli import positive
from ser_triton.export import repository
from ser_triton.serving.steps.segmentation import RuleError, SegmentationRules


def segmentation_rules(text: str) -> dict:
    """argparse type: JSON {rule: value} of the stream's segmentation rules, checked here."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): give rules as '{{\"pause_seconds\": 0.8}}'") from None
    if not isinstance(values, dict):
        raise argparse.ArgumentTypeError("give the rules as a JSON object, like '{\"pause_seconds\": 0.8}'")
    try:
        SegmentationRules.from_dict(values)
    except (RuleError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return values


def add_deployment_arguments(parser, recorded: bool = False) -> None:
    """The deployment knobs; `recorded`: they default to what the export recorded (make steps)."""
    defaults = repository.Deployment()

    def default(name):
        return None if recorded else getattr(defaults, name)

    group = parser.add_argument_group("deployment")
    group.add_argument("--max-batch-size", dest="max_batch_size", type=int, default=default("max_batch_size"))
    group.add_argument("--queue-delay-us", dest="queue_delay_us", type=int, default=default("queue_delay_us"),
                       help="dynamic batching delay of the networks, microseconds")
    group.add_argument("--threads", dest="network_threads", type=int, default=default("network_threads"),
                       help="ONNX Runtime threads per network (cpu target)")
    group.add_argument("--max-audio-seconds", dest="max_audio_seconds", type=float,
                       default=default("max_audio_seconds"), help="longest request the server accepts")
    group.add_argument("--padding-slack", dest="padding_slack", type=float, default=default("padding_slack"),
                       help="cpu target: batch requests together only while zero padding adds at most "
                            "this fraction of extra work")
    group.add_argument("--max-batch-seconds", dest="max_batch_seconds", type=positive(float, "seconds"),
                       default=default("max_batch_seconds"),
                       help="cpu target: most padded audio an audio network runs at once (bounds its memory)")
    group.add_argument("--max-streams", dest="max_streams", type=positive(int), default=default("max_streams"),
                       help="live streams the streaming model serves at once")
    group.add_argument("--stream-idle-seconds", dest="stream_idle_seconds", type=positive(float, "seconds"),
                       default=default("stream_idle_seconds"), help="a stream silent this long is ended")
    group.add_argument("--stream-in-flight", dest="stream_in_flight", type=positive(int),
                       default=default("stream_in_flight"),
                       help="classifications the streaming model has at the ensemble at once (default: no limit); "
                            "the rest wait, finished utterances first, stale interims dropped")
    group.add_argument("--stream-speculate-seconds", dest="stream_speculate_seconds", type=positive(float, "seconds"),
                       default=default("stream_speculate_seconds"),
                       help="classify an utterance ahead once a pause in it has lasted this long, on an idle ensemble "
                            "(default: never)")
    group.add_argument("--segmentation", dest="segmentation", type=segmentation_rules, metavar="JSON",
                       default=default("segmentation"),
                       help="segmentation rules that differ from the defaults: "
                            f"{', '.join(f.name for f in dataclasses.fields(SegmentationRules))}")


DEPLOYMENT_KNOBS = ("max_batch_size", "queue_delay_us", "network_threads", "max_audio_seconds", "padding_slack",
                    "max_batch_seconds", "max_streams", "stream_idle_seconds", "stream_in_flight",
                    "stream_speculate_seconds", "segmentation")
