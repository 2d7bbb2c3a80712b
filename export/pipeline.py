"""The export as an API: options in, a verified Triton model repository and its report out.

    from export.pipeline import ExportOptions, export
    report = export(ExportOptions(out=Path("model_repository"), preset="tiny"))

Per network (model.glossary order): build it, export it to ONNX, free it, check the file against
PyTorch (alone and in a padded batch), then for the cpu target rewrite and quantize it
(export.optimize), each change checked or measured. One network is in memory at a time, and one
ONNX Runtime session (peak RSS: `peak_rss_mib` in the report). Then the tokenizer assets, the
configs and Python steps, and `export_report.json`. Every failure is an
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

from client.contract import ENSEMBLE
from export import repository, specs
from export.drift import chain_drift
from export.errors import ExportError, ModelUnavailable
from export.examples import PARITY_EXTENTS, example_inputs
from export.onnx_export import TOLERANCE, export_and_check
from export.optimize import optimize_network
from export.quantize import PRECISIONS
from model.errors import ModelError
from model.networks import served_network
from model.sources import BERT_MAX_TOKENS, ModelBuilder, ModelSources, warn_if_untrained
from serving.steps.runtime import give_back_freed_memory

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
    """cpu target: fp32, or int8 (dynamic quantization; drift against fp32 is reported)."""
    optimize: bool = True
    """cpu target: rewrite the conv front ends into MatMuls (checked against the exported graph)."""
    tolerance: float = TOLERANCE
    """Largest |ONNX - PyTorch| (and |rewritten - exported|) allowed."""
    deployment: repository.Deployment = field(default_factory=repository.Deployment)

    def check(self) -> None:
        target = self.deployment.target
        if target not in repository.TARGETS:
            raise ExportError(f"unknown target '{target}': choose one of {', '.join(repository.TARGETS)}")
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision '{self.precision}': choose one of {', '.join(PRECISIONS)}")
        if self.precision != "fp32" and target != "cpu":
            raise ExportError(f"--precision {self.precision} is for the cpu target (ONNX Runtime on CPU); "
                              f"the {target} target exports fp32")
        if not self.tolerance > 0:
            raise ExportError(f"--tolerance must be positive, not {self.tolerance}")


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
    repository.write_tokenizer_assets(assets, model.bert_tokenizer, model.ctc_tokenizer, BERT_MAX_TOKENS)
    report = {"model": model.description, "head_trained": model.head_trained, "target": deployment.target,
              "precision": options.precision, "sizes": asdict(sizes), "deployment": deployment.as_dict(),
              "networks": {}}
    cpu = deployment.target == "cpu"
    if cpu:
        report["optimization"] = {"precision": options.precision, "graph_rewrites": options.optimize,
                                  "tolerance_fp32": options.tolerance, "networks": {}}
    fp32_files = {}
    with tempfile.TemporaryDirectory(prefix="export-", dir=out) as scratch:
        for name in specs.ONNX_NETWORKS:
            log.info("exporting %s", name)
            spec, path = all_specs[name], repository.network_file(out, name)
            report["networks"][name] = export_and_check(network_builder(model, name), spec, sizes, path,
                                                        options.tolerance)
            if cpu:
                entry, fp32_files[name] = optimize_network(path, spec, example_inputs(spec, sizes),
                                                           Path(scratch) / name, options.precision,
                                                           options.optimize, options.tolerance)
                report["optimization"]["networks"][name] = entry
            gc.collect()
        if cpu and options.precision != "fp32":
            audio = example_inputs(all_specs[specs.AUDIO_INPUT], sizes, PARITY_EXTENTS)
            report["optimization"]["chain_drift_vs_fp32"] = chain_drift(
                fp32_files, {name: repository.network_file(out, name) for name in specs.ONNX_NETWORKS}, assets,
                all_specs, [case[all_specs[specs.AUDIO_INPUT].input("audio").name][0] for case in audio])
    if cpu:
        report["optimization"]["seconds"] = round(time.perf_counter() - started, 1)
    if deployment.target == "tensorrt":
        from export.tensorrt import build_plans

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
    if report.get("precision", "fp32") != "fp32":
        chain = optimization["chain_drift_vs_fp32"]
        cosine = min(o["min_cosine"] for e in optimization["networks"].values()
                     for o in e.get("int8_vs_fp32", {}).values())
        lines.append(f"measured: {report['precision']} networks replace them and are NOT held to a tolerance; "
                     f"their drift from fp32 on "
                     f"{chain['utterances']} utterances: label agreement {chain['label_agreement']:.2f}, "
                     f"max |probability difference| {chain['max_abs_probability_diff']:.3f}, transcripts equal "
                     f"{chain['transcript_agreement']:.2f}, min hidden-state cosine {cosine:.4f}")
    return lines
