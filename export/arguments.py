"""The deployment flags shared by `python -m ser_triton.export` and `python -m ser_triton.export.refresh` (make steps)."""

from ser_triton.core.cli import positive
from ser_triton.export import repository


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


DEPLOYMENT_KNOBS = ("max_batch_size", "queue_delay_us", "network_threads", "max_audio_seconds", "padding_slack",
                    "max_batch_seconds")
