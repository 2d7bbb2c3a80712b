"""`make export`: the research model -> verified ONNX networks -> a Triton model repository.

    python -m export --preset tiny                 # offline, seconds
    python -m export --checkpoint checkpoints/hubert_epoch_3_valacc_75.27.pt
    python -m export --preset full-random          # full size, random weights (benchmarks)
"""

import argparse
import json
import logging
import resource
import shutil
import sys
import time
from pathlib import Path

from export import optimize, repository, specs
from export.networks import exportable_networks
from export.onnx_export import ParityError, export_and_check
from export.sources import BERT_MAX_TOKENS, SourceError, add_model_arguments, components_from_args, warn_if_untrained
from export.checkpoint import CheckpointError

log = logging.getLogger("export")
REPORT_FILE = "export_report.json"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository to write")
    parser.add_argument("--target", choices=repository.TARGETS, default="cpu",
                        help="cpu: Python-backend ONNX Runtime (the local server, default); "
                             "onnxruntime / tensorrt: native GPU backends in the Triton containers")
    parser.add_argument("--max-batch-size", type=int, default=repository.Deployment.max_batch_size)
    parser.add_argument("--queue-delay-us", type=int, default=repository.Deployment.queue_delay_us,
                        help="dynamic batching delay of the networks, microseconds")
    parser.add_argument("--threads", type=int, default=repository.Deployment.network_threads,
                        help="ONNX Runtime threads per network (cpu target)")
    parser.add_argument("--max-audio-seconds", type=float, default=repository.Deployment.max_audio_seconds,
                        help="longest request the server accepts")
    parser.add_argument("--padding-slack", type=float, default=repository.Deployment.padding_slack,
                        help="cpu target: batch requests together only while zero padding adds at most "
                             "this fraction of extra work")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="max |ONNX - PyTorch| allowed (default 1e-4)")
    parser.add_argument("--precision", choices=optimize.PRECISIONS, default="fp32",
                        help="cpu target: fp32 (default), or int8 dynamic quantisation of the encoders' "
                             "MatMuls (faster; drift against fp32 goes into the report)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="cpu target: keep the networks as exported (no conv->MatMul rewrite, no fusions)")
    args = parser.parse_args(argv)
    if args.target != "cpu" and args.precision != "fp32":
        parser.error("--precision int8 is for the cpu target (dynamic quantisation for ONNX Runtime on CPU)")
    return args


def export(args) -> dict:
    started = time.perf_counter()
    components = components_from_args(args)
    warn_if_untrained(components)
    sizes = specs.Sizes.of(components)
    all_specs = specs.model_specs(sizes)
    deployment = repository.Deployment(
        target=args.target, max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us,
        network_threads=args.threads, max_audio_seconds=args.max_audio_seconds, padding_slack=args.padding_slack,
    )
    out: Path = args.out
    for name in list(all_specs) + ["ser"]:
        shutil.rmtree(out / name, ignore_errors=True)
    report = {"model": components.description, "head_trained": components.head_trained,
              "target": args.target, "networks": {}}
    tolerance = {} if args.tolerance is None else {"tolerance": args.tolerance}
    for name, network in exportable_networks(components).items():
        log.info("exporting %s", name)
        path = out / name / repository.VERSION / repository.ONNX_FILE
        report["networks"][name] = export_and_check(name, network, all_specs[name], sizes, path, **tolerance)
        log.info("%s: %s", name, json.dumps(report["networks"][name]["outputs"]))
    if args.target == "cpu":
        report["optimization"] = optimize.optimise_repository(out, components, all_specs, sizes, args.precision,
                                                              args.optimize, **tolerance)
    if args.target == "tensorrt":
        from export.tensorrt import build_plans

        build_plans(out, all_specs, deployment)
    repository.write_tokenizer_assets(out / specs.CTC_TOKENIZE / repository.VERSION,
                                      components.bert_tokenizer, components.ctc_tokenizer, BERT_MAX_TOKENS)
    repository.write_repository(out, all_specs, deployment)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        report = export(args)
    except (SourceError, CheckpointError, ParityError) as error:
        log.error("%s", error)
        return 1
    worst = max(o["max_abs_diff_onnx_vs_torch"] for n in report["networks"].values() for o in n["outputs"].values())
    print(f"wrote {args.out}/ ({args.target} target, {report['export_seconds']} s, peak {report['peak_rss_mib']} MiB); "
          f"all networks match PyTorch (max |ONNX - PyTorch| = {worst:.2e}); report: {args.out / REPORT_FILE}")
    if not report["head_trained"]:
        print("NOTE: no --checkpoint given: the fusion head is untrained and its emotions are meaningless.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
