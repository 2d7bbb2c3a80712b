"""The export as an API: options in, a verified Triton model repository and its report out.

    from ser_triton.export.pipeline import ExportOptions, export
    report = export(ExportOptions(out=Path("model_repository"), preset="tiny"))

Per network (core.glossary order): build it, export it to ONNX, free it, check the file against
PyTorch (alone and in a padded batch), then for the cpu target rewrite its conv front end
(export.optimize), checked against the exported graph. Then, for a reduced precision, each
network's variant, judged along the whole chain on speech (export.precision). One network is in
memory at a time, and one session (peak RSS: `peak_rss_mib` in the report). Then the configs and
Python steps, and `export_report.json`. Every failure is an
`export.errors.ExportError` whose message says what to do.
"""

import gc
import json
import logging
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ser_triton.core.contract import ENSEMBLE
from ser_triton.export import calibration, precision, repository
from ser_triton.core import specs
from ser_triton.export.cpu_features import cpu_flags, isa
from ser_triton.export.errors import ExportError, ModelUnavailable
from ser_triton.export.examples import example_inputs
from ser_triton.export.onnx_export import TOLERANCE, export_and_check
from ser_triton.export.optimize import optimize_network
from ser_triton.model.errors import ModelError
from ser_triton.model.networks import served_network
from ser_triton.model.sources import BERT_MAX_TOKENS, ModelBuilder, ModelSources, warn_if_untrained
from ser_triton.serving.steps.runtime import give_back_freed_memory
from ser_triton.serving.steps.text import write_tokenizer_assets

log = logging.getLogger("export")
REPORT_FILE = "export_report.json"


@dataclass
class ExportOptions:
    out: Path = Path("model_repository")
    preset: str = "pretrained"
    sources: ModelSources = field(default_factory=ModelSources)
    checkpoint: Path | None = None
    seed: int = 0
    precision: str = "fp32"
    """cpu target: one of export.precision.PRECISIONS (auto: per network, the fastest variant within
    the drift limits on this CPU); the drift of every reduced-precision network is reported."""
    calibration_audio: list[Path] | None = None
    """Speech to calibrate static int8 and to judge drift on (export.calibration; default: the
    repository's recorded sentences)."""
    optimize: bool = True
    """cpu target: rewrite the conv front ends into MatMuls (checked against the exported graph)."""
    tolerance: float = TOLERANCE
    """Largest |ONNX - PyTorch| (and |rewritten - exported|) allowed."""
    deployment: repository.Deployment = field(default_factory=repository.Deployment)

    def check(self) -> None:
        target = self.deployment.target
        if target not in repository.TARGETS:
            raise ExportError(f"unknown target '{target}': choose one of {', '.join(repository.TARGETS)}")
        if self.precision not in precision.PRECISIONS:
            raise ExportError(f"unknown precision '{self.precision}': choose one of {', '.join(precision.PRECISIONS)}")
        if self.precision != "fp32" and target != "cpu":
            raise ExportError(f"--precision {self.precision} is for the cpu target (ONNX Runtime on CPU); "
                              f"the {target} target exports fp32")
        if not self.tolerance > 0:
            raise ExportError(f"--tolerance must be positive, not {self.tolerance}")
        if not self.deployment.max_batch_seconds > 0:
            raise ExportError(f"--max-batch-seconds must be more than 0, not {self.deployment.max_batch_seconds}")


def model_builder(options: ExportOptions) -> ModelBuilder:
    try:
        return ModelBuilder(options.preset, options.sources, options.checkpoint, options.seed)
    except ModelError as error:
        raise ModelUnavailable(str(error)) from error


def network_builder(model, name: str):
    """A function that builds one served network now (the export frees it after use)."""
    def build():
        try:
            return served_network(model, name)
        except ModelError as error:
            raise ModelUnavailable(str(error)) from error
    return build


def export_network(model, name: str, path: Path, scratch: Path, tolerance: float = TOLERANCE,
                   optimize: bool = True) -> tuple[dict, dict | None]:
    """One network of `model` (a ModelBuilder or Components) as an fp32 ONNX file at `path`, checked
    against PyTorch, and with `optimize` its conv front end rewritten as the cpu target serves it
    (`scratch`: a folder of its own). (parity report, rewrite report or None). Training runs the
    ASR from this file, so that its transcripts are the served ones (train.transcripts)."""
    log.info("exporting %s", name)
    sizes = specs.Sizes.of(model)
    spec = specs.model_specs(sizes)[name]
    parity = export_and_check(network_builder(model, name), spec, sizes, path, tolerance)
    rewrite = optimize_network(path, spec, example_inputs(spec, sizes), scratch, tolerance) if optimize else None
    gc.collect()
    return parity, rewrite


def export(options: ExportOptions, components=None) -> dict:
    """Write and verify the repository at options.out; returns the report (also written there).

    components: a model.sources.Components already in memory, to export instead of building each
    network from options (then all of them stay in memory)."""
    options.check()
    started = time.perf_counter()
    give_back_freed_memory()
    model = components or model_builder(options)
    warn_if_untrained(model)
    sizes = specs.Sizes.of(model)
    all_specs = specs.model_specs(sizes)
    out, deployment = Path(options.out), options.deployment
    for name in list(all_specs) + [ENSEMBLE]:
        shutil.rmtree(out / name, ignore_errors=True)
    assets = repository.model_directory(out, specs.CTC_TOKENIZE)
    write_tokenizer_assets(assets, model.bert_tokenizer, model.ctc_tokenizer, BERT_MAX_TOKENS,
                           model.config(specs.ASR).inputs_to_logits_ratio)
    report = {"model": model.description, "head_trained": model.head_trained, "target": deployment.target,
              "precision": options.precision, "sizes": asdict(sizes), "deployment": deployment.as_dict(),
              "networks": {}}
    cpu = deployment.target == "cpu"
    if cpu:
        report["optimization"] = {"precision": options.precision, "graph_rewrites": options.optimize,
                                  "tolerance_fp32": options.tolerance, "networks": {}}
    with tempfile.TemporaryDirectory(prefix="export-", dir=out) as scratch:
        for name in specs.ONNX_NETWORKS:
            parity, rewrite = export_network(model, name, repository.network_file(out, name), Path(scratch) / name,
                                             options.tolerance, cpu and options.optimize)
            report["networks"][name] = parity
            if rewrite is not None:
                report["optimization"]["networks"][name] = rewrite
        if cpu and options.precision != "fp32":
            audios, source = calibration.load(options.calibration_audio)
            choice = precision.choose(options.precision, out, all_specs, audios, source, Path(scratch),
                                      isa(cpu_flags()), deployment.network_threads, log)
            report["precision_choice"] = choice.report()
            deployment.runtimes = choice.runtimes()
            report["deployment"] = deployment.as_dict()
    if cpu:
        report["optimization"]["seconds"] = round(time.perf_counter() - started, 1)
    if deployment.target == "tensorrt":
        from ser_triton.export.tensorrt import build_plans

        build_plans(out, all_specs, deployment)
    repository.write_repository(out, all_specs, deployment)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    write_report(out, report)
    return report


def write_report(out: Path, report: dict) -> None:
    (Path(out) / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")


def verified(report: dict) -> list[str]:
    """What the export verified (and, for reduced precision, measured), one line each."""
    networks = report["networks"].values()
    parity = max(o["max_abs_diff_onnx_vs_torch"] for n in networks for o in n["outputs"].values())
    batched = max(o["max_abs_diff_batched_vs_alone"] for n in networks for o in n["outputs"].values())
    tolerance = next(iter(networks))["tolerance"]
    lines = [f"verified: exported fp32 networks match PyTorch within {tolerance:g} (max |ONNX - PyTorch| = {parity:.2e}; "
             f"padded batch vs alone: {batched:.2e})"]
    optimization = report.get("optimization", {})
    rewrites = [o["max_abs_diff"] for e in optimization.get("networks", {}).values()
                for o in e.get("fp32_vs_exported", {}).values()]
    if rewrites:
        lines.append(f"verified: rewritten CPU graphs match the exported ones (max |difference| = {max(rewrites):.2e})")
    choice = report.get("precision_choice")
    if choice:
        picked = ", ".join(f"{name} {entry['chosen']}" for name, entry in choice["networks"].items())
        drift = choice["chain_drift_vs_fp32"]
        lines.append(f"measured: --precision {choice['requested']} serves {picked}; not held to the fp32 tolerance, "
                     f"their drift from fp32 on {drift['utterances']} utterances ({choice['audio']}): label agreement "
                     f"{drift['label_agreement']:.2f} ({_share(drift['decisive_label_agreement'])} of "
                     f"{drift['decisive_utterances']} decisive), transcript CER {drift['transcript_cer']:.3f} "
                     f"({_share(drift['decisive_frame_agreement'])} of {drift['decisive_frames']} decisive CTC frames "
                     f"agree), max |probability difference| {drift['max_probability_diff']:.3f}, min hidden-state "
                     f"cosine {drift['min_hidden_cosine']:.4f}")
        if not choice["within_limits"]:
            broken = [f"{name}: {'; '.join(entry['candidates'][entry['chosen']]['violations'])}"
                      for name, entry in choice["networks"].items() if not entry["within_limits"]]
            broken += [f"whole chain: {'; '.join(choice['chain_violations'])}"] if choice["chain_violations"] else []
            lines.append(f"WARNING: OUTSIDE THE DRIFT LIMITS ({', '.join(broken)}): these answers differ from "
                         "fp32's more than export.precision.DRIFT_LIMITS allow; use --precision auto, or check the "
                         "drift on your own data (ser-evaluate --compare)")
        else:
            lines.append("verified: every network and the whole chain are within the drift limits "
                         f"(export.precision.DRIFT_LIMITS: {choice['limits']})")
    return lines


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
