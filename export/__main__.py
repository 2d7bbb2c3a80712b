"""`make export`: the research model -> verified ONNX networks -> a Triton model repository.

    python -m ser_triton.export --preset tiny                 # offline, seconds
    python -m ser_triton.export --checkpoint checkpoints/hubert_epoch_3_valacc_75.27.pt
    python -m ser_triton.export --preset full-random          # full size, random weights (benchmarks)
    python -m ser_triton.export --fallback-preset tiny        # pretrained, or tiny where no hub answers (make demo)

This module only parses and prints; the work is export.pipeline.
"""

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from ser_triton.export import repository
from ser_triton.export.arguments import DEPLOYMENT_KNOBS, add_deployment_arguments
from ser_triton.export.errors import ExportError, ModelUnavailable
from ser_triton.export.onnx_export import TOLERANCE
from ser_triton.export.pipeline import REPORT_FILE, ExportOptions, export, verified
from ser_triton.export.precision import PRECISIONS
from ser_triton.model.errors import SourceError
from ser_triton.model.sources import PRESETS, ModelSources, add_model_arguments, sources_from_args


def parse_args(argv) -> ExportOptions:
    return options_from(arguments(argv))


def arguments(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ser_triton.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository to write")
    parser.add_argument("--target", choices=repository.TARGETS, default=repository.Deployment.target,
                        help="cpu: Python-backend ONNX Runtime (the local server, default); "
                             "onnxruntime / tensorrt: native GPU backends in the Triton containers")
    add_deployment_arguments(parser)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"max |ONNX - PyTorch| allowed (default {TOLERANCE:g})")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="cpu target: fp32 (default); int8 (dynamic quantization); int8-static "
                             "(calibrated); bf16 (OpenVINO, for CPUs with AMX/AVX512-BF16); auto: per "
                             "network, the fastest on this CPU within the drift limits. Drift from fp32 "
                             "goes into the report")
    parser.add_argument("--calibration-audio", nargs="+", type=Path, metavar="FILE|DIR",
                        help="speech that static int8 is calibrated and every reduced precision judged on "
                             "(default: the repository's recorded sentences)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="cpu target: keep the networks as exported (no conv->MatMul rewrite)")
    parser.add_argument("--fallback-preset", choices=PRESETS, metavar="PRESET",
                        help="where the pretrained weights cannot be downloaded (no model hub), say so and export "
                             "this preset instead (make demo: tiny)")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(
        out=args.out, preset=args.preset, sources=sources_from_args(args), checkpoint=args.checkpoint,
        seed=args.seed, precision=args.precision, optimize=args.optimize, tolerance=args.tolerance,
        calibration_audio=args.calibration_audio,
        deployment=repository.Deployment(target=args.target, **{k: getattr(args, k) for k in DEPLOYMENT_KNOBS}),
    )


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = arguments(argv)
    fallback, options = args.fallback_preset, options_from(args)
    try:
        try:
            report = export(options)
        except ModelUnavailable as error:
            if fallback is None or options.preset != "pretrained" or not isinstance(error.__cause__, SourceError):
                raise
            print(f"\nmake export: the pretrained models could not be downloaded "
                  f"({error.__cause__.__cause__ or error}).\nmake export: going on with PRESET={fallback}: "
                  f"{'small random networks, offline; their emotions are meaningless' if fallback == 'tiny' else ''}."
                  f" Run `make demo PRESET={fallback}` to skip the download attempt.\n", file=sys.stderr)
            options = dataclasses.replace(options, preset=fallback, sources=ModelSources(), checkpoint=None)
            report = export(options)
    except ExportError as error:
        print(f"make export: {error}", file=sys.stderr)
        return 1
    print(f"wrote {options.out}/ ({options.deployment.target} target, {options.precision}, "
          f"{report['export_seconds']} s, peak {report['peak_rss_mib']} MiB); report: {options.out / REPORT_FILE}")
    for line in verified(report):
        print(line)
    if not report["head_trained"]:
        print("NOTE: no --checkpoint given: the fusion head is untrained and its emotions are meaningless.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
