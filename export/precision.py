"""Which precision each network is served in: the variants, the drift limits, and the choice.

A variant is one way to run a network: a runtime (ONNX Runtime or OpenVINO), the precision of its
matrix work, and for int8 how it is quantized and which parts stay fp32. `--precision` names one
variant for every network, or `auto`: per network, the fastest variant on this CPU whose drift
from fp32 stays within DRIFT_LIMITS, measured on real audio through the served chain. Every
choice is recorded with its evidence (time, drift, limits) in export_report.json.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from ser_triton.export import network_files

from ser_triton.core import specs
from ser_triton.export.cpu_features import has_bf16, has_vnni
from ser_triton.export.drift import batch_dependence, chain_drift, output_cosine, run_chain, time_network
from ser_triton.export.quantize import quantize_dynamic_int8, quantize_static_int8
from ser_triton.export.repository import model_directory, network_file
from ser_triton.serving.steps.runtime import make_session

PRECISIONS = ("fp32", "int8", "int8-static", "bf16", "auto")
"""fp32; int8 (dynamic quantization); int8-static (calibrated); bf16 (OpenVINO, for CPUs with AMX
or AVX512-BF16); auto (per network, the fastest within the drift limits)."""


@dataclass(frozen=True)
class DriftLimits:
    """How far a reduced-precision network may move the served answers from fp32's.

    Decisions are judged where fp32 made one: an emotion whose top probability leads by at least
    export.drift.LABEL_MARGIN, a CTC frame whose top logit leads by at least export.drift.FRAME_MARGIN. A near-tie flips
    under any perturbation (dynamic int8 even flips it with the batch), so agreement there says
    nothing about a variant; the largest probability change bounds those cases instead. Overall
    label agreement and transcript CER are reported beside, not gated: with random weights (the
    benchmark's) almost every decision is a near-tie."""

    min_hidden_cosine: float = 0.995
    """Each output of the network itself against fp32's, per utterance (valid part)."""
    min_decisive_label_agreement: float = 0.95
    """Share of decisive utterances whose emotion stays the same along the whole chain."""
    max_probability_diff: float = 0.05
    """Largest change of any emotion probability."""
    min_decisive_frame_agreement: float = 0.99
    """Share of decisive CTC frames whose character (or blank) stays the same."""

    def violations(self, drift: dict) -> list[str]:
        """The limits this drift breaks, in words (none: within the limits). A measure with
        nothing to judge (None: no decisive utterance or frame) breaks none."""
        checks = (("min_hidden_cosine", "<", self.min_hidden_cosine),
                  ("decisive_label_agreement", "<", self.min_decisive_label_agreement),
                  ("max_probability_diff", ">", self.max_probability_diff),
                  ("decisive_frame_agreement", "<", self.min_decisive_frame_agreement))
        broken = []
        for key, sign, limit in checks:
            value = drift.get(key)
            if value is not None and (value < limit if sign == "<" else value > limit):
                broken.append(f"{key} {value:.4g} {sign} {limit:g}")
        return broken


DRIFT_LIMITS = DriftLimits()


@dataclass(frozen=True)
class Variant:
    name: str
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    """What its matrix work runs in: fp32, int8 or bf16 (the ceiling it is measured against)."""
    quantization: str | None = None
    """int8: "dynamic" or "static"."""
    keep_fp32: tuple[str, ...] = ()
    """export.quantize.KEEP_FP32 groups left in fp32."""

    @property
    def runtime_precision(self) -> str:
        """The inference precision the runtime is asked for (OpenVINO's hint)."""
        return {"bf16": "bf16"}.get(self.precision, "f32")

    def build(self, fp32: Path, destination: Path, calibration: list[dict], reduce_range: bool,
              calibration_cache: Path | None = None) -> Path:
        """The ONNX file of this variant: fp32 itself, or its quantized copy at `destination`."""
        if self.quantization == "dynamic":
            quantize_dynamic_int8(fp32, destination, self.keep_fp32, reduce_range)
        elif self.quantization == "static":
            quantize_static_int8(fp32, destination, calibration, self.keep_fp32, reduce_range, calibration_cache)
        else:
            return fp32
        return destination

    def describe(self) -> dict:
        return asdict(self)


def int8(quantization: str, keep_fp32: tuple = ()) -> Variant:
    name = "int8" if quantization == "dynamic" else "int8-static"
    if keep_fp32:
        name += "+fp32:" + ",".join(keep_fp32)
    return Variant(name, precision="int8", quantization=quantization, keep_fp32=keep_fp32)


FP32 = Variant("fp32")
BF16 = Variant("bf16", runtime="openvino", precision="bf16")
FP32_OPENVINO = Variant("fp32-openvino", runtime="openvino")
FIXED = {"fp32": FP32, "int8": int8("dynamic"), "int8-static": int8("static"), "bf16": BF16}
"""The variant an explicit --precision gives every network."""

KEEP_OPTIONS = {
    specs.ACOUSTIC_ENCODER: ((), ("front_end",)),
    specs.ASR: ((), ("front_end",), ("ctc_head",), ("front_end", "ctc_head")),
    specs.TEXT_ENCODER: ((),),
    specs.FUSION_HEAD: ((),),
}
"""Which parts of each network an int8 candidate may keep in fp32."""


def candidates(network: str, isa: list[str]) -> list[Variant]:
    """What `auto` tries for one network on a CPU with this ISA (fp32 first: always within limits)."""
    found = [FP32, FP32_OPENVINO]
    for quantization in ("dynamic", "static"):
        found += [int8(quantization, keep) for keep in KEEP_OPTIONS[network]]
    if has_bf16(isa):
        found.append(BF16)
    return found


def reduce_range(isa: list[str]) -> bool:
    """7-bit activations for int8 where u8*s8 products could saturate (no VNNI/AMX)."""
    return not has_vnni(isa)


# ---------------------------------------------------------------- measuring and choosing


def session_factory(path: Path, variant: Variant, threads: int):
    return lambda: make_session(path, threads, variant.runtime, variant.runtime_precision)


def network_feeds(values: list[dict], spec: specs.ModelSpec) -> list[dict]:
    return [{t.name: value[t.name] for t in spec.inputs} for value in values]


@dataclass
class Evidence:
    """What the choice is made from: the fp32 chain on real audio and the feeds it gives."""

    reference: list[dict]
    """Every tensor of every utterance through the fp32 chain."""
    calibration: list[int]
    """The utterances static int8 calibrates on: those of typical length around the median (a long
    one's intermediate tensors take gigabytes at full size)."""
    timing: list[int]
    """The utterances each variant is timed on (a typical and a long one)."""

    @classmethod
    def of(cls, reference: list[dict], all_specs, calibration: int = 8) -> "Evidence":
        audio = all_specs[specs.AUDIO_INPUT].output("length").name
        order = sorted(range(len(reference)), key=lambda i: int(reference[i][audio][0]))
        middle = max(0, len(order) // 2 - calibration // 2)
        timing = sorted({order[len(order) // 2], order[min(len(order) - 1, int(len(order) * 0.9))]})
        return cls(reference, sorted(order[middle: middle + calibration]), timing)


def time_and_batch(variant: Variant, path: Path, spec: specs.ModelSpec, evidence: Evidence, threads: int,
                   timed: bool) -> dict:
    """One variant of one network, alone: its speed (seconds on the timing utterances, with the
    threads it is served with) and how much a padded batch changes its answers."""
    feeds = network_feeds(evidence.reference, spec)
    entry = {"variant": variant.describe(), "onnx_file_bytes": path.stat().st_size}
    session = session_factory(path, variant, threads)()
    if timed:
        entry["seconds"] = round(time_network(session, spec, [feeds[i] for i in evidence.timing]), 4)
    entry["max_abs_diff_batched_vs_alone"] = batch_dependence(session, spec, feeds[:4])
    return entry


def judge(variant: Variant, path: Path, spec: specs.ModelSpec, evidence: Evidence, fp32_sessions: dict,
          assets: Path, all_specs: dict) -> dict:
    """Its drift from fp32 along the chain (the other networks fp32), against DRIFT_LIMITS."""
    if variant == FP32:
        candidate = evidence.reference
    else:
        candidate = run_chain({**fp32_sessions, spec.name: session_factory(path, variant, 0)}, assets, all_specs,
                              cached=evidence.reference, replaced={spec.name})
    drift = {"min_hidden_cosine": output_cosine(evidence.reference, candidate, spec),
             **chain_drift(evidence.reference, candidate, all_specs)}
    violations = DRIFT_LIMITS.violations(drift)
    return {"drift": drift, "violations": violations, "within_limits": not violations}


def pick(entries: dict[str, dict]) -> str:
    """The fastest judged variant within the drift limits (fp32 is always among them)."""
    allowed = {name: entry for name, entry in entries.items() if entry.get("within_limits")}
    return min(allowed, key=lambda name: allowed[name]["seconds"])


def choose_variant(requested: str, name: str, fp32: Path, spec, evidence: Evidence, fp32_sessions: dict, assets: Path,
                   all_specs: dict, scratch: Path, isa: list[str], threads: int, log) -> tuple[Variant, Path, dict]:
    """One network's variant: for `auto`, every candidate is built and timed, then judged from the
    fastest down until one is within the limits (the slower ones need no judging)."""
    variants = candidates(name, isa) if requested == "auto" else [FIXED[requested]]
    calibration = network_feeds([evidence.reference[i] for i in evidence.calibration], spec)
    cache = scratch / f"{name}.calibration.json"
    entries, files = {}, {}
    for variant in variants:
        files[variant.name] = variant.build(fp32, scratch / name / variant.name / fp32.name, calibration,
                                            reduce_range(isa), cache)
        entries[variant.name] = time_and_batch(variant, files[variant.name], spec, evidence, threads,
                                               timed=requested == "auto")
    order = sorted(variants, key=lambda v: entries[v.name]["seconds"]) if requested == "auto" else variants
    chosen = None
    for variant in order:
        if chosen is not None:
            entries[variant.name]["judged"] = f"no: {chosen.name} is faster and within the limits"
            continue
        entries[variant.name].update(judge(variant, files[variant.name], spec, evidence, fp32_sessions, assets,
                                           all_specs))
        log.info("%s %s: %s", name, variant.name, {k: v for k, v in entries[variant.name].items() if k != "variant"})
        if entries[variant.name]["within_limits"] or requested != "auto":
            chosen = variant
    for variant_name, path in files.items():
        if path != fp32 and variant_name != chosen.name:
            network_files.remove(path)
    return chosen, files[chosen.name], entries


def choose(requested: str, out: Path, all_specs: dict, audios: list, source: str, scratch: Path, isa: list[str],
           threads: int, log) -> dict:
    """Replace each fp32 network in `out` by its variant for `requested` (auto: the fastest within
    the drift limits), measured on `audios`; returns the report (choices and their evidence).
    For `auto`, should the chosen networks together break a limit that each kept alone, the one
    that gains least goes back to fp32 until the chain is within the limits."""
    assets = model_directory(out, specs.CTC_TOKENIZE)
    fp32 = {name: network_file(out, name) for name in specs.ONNX_NETWORKS}
    fp32_sessions = {name: session_factory(path, FP32, 0) for name, path in fp32.items()}  # every core
    log.info("precision %s: the fp32 chain on %d utterances (%s)", requested, len(audios), source)
    evidence = Evidence.of(run_chain(fp32_sessions, assets, all_specs, audios), all_specs)
    report = {"requested": requested, "isa": isa, "reduce_range": reduce_range(isa),
              "limits": asdict(DRIFT_LIMITS), "audio": source, "utterances": len(audios),
              "calibration_utterances": len(evidence.calibration), "threads": threads, "networks": {}}
    chosen, files = {}, {}
    for name in specs.ONNX_NETWORKS:
        chosen[name], files[name], entries = choose_variant(requested, name, fp32[name], all_specs[name], evidence,
                                                            fp32_sessions, assets, all_specs, scratch, isa, threads, log)
        report["networks"][name] = {"candidates": entries}
        if not entries[chosen[name].name]["within_limits"]:
            log.warning("%s: --precision %s moves the answers past the drift limits (%s): exported anyway",
                        name, requested, "; ".join(entries[chosen[name].name]["violations"]))
    while True:
        replaced = {name for name, variant in chosen.items() if variant != FP32}
        whole = run_chain({name: session_factory(files[name], chosen[name], 0) for name in specs.ONNX_NETWORKS},
                          assets, all_specs, cached=evidence.reference, replaced=replaced)
        drift = {"min_hidden_cosine": min(report["networks"][name]["candidates"][chosen[name].name]["drift"][
            "min_hidden_cosine"] for name in specs.ONNX_NETWORKS), **chain_drift(evidence.reference, whole, all_specs)}
        violations = DRIFT_LIMITS.violations(drift)
        if not violations or requested != "auto" or not replaced:
            break
        gains = {name: report["networks"][name]["candidates"]["fp32"]["seconds"]
                 - report["networks"][name]["candidates"][chosen[name].name]["seconds"] for name in replaced}
        back = min(gains, key=gains.get)
        log.info("precision auto: together the networks break %s; %s goes back to fp32", violations, back)
        report["networks"][back]["candidates"]["fp32"].update(judge(FP32, fp32[back], all_specs[back], evidence,
                                                                    fp32_sessions, assets, all_specs))
        chosen[back], files[back] = FP32, fp32[back]
    for name, variant in chosen.items():
        if files[name] != fp32[name]:
            network_files.move(files[name], fp32[name])
        report["networks"][name].update(chosen=variant.name, runtime=variant.runtime,
                                        runtime_precision=variant.runtime_precision,
                                        within_limits=report["networks"][name]["candidates"][variant.name]["within_limits"])
    report["chain_drift_vs_fp32"] = drift  # the network cosine: each measured on fp32 inputs, where tokens line up
    report["chain_violations"] = violations
    report["within_limits"] = not violations and all(entry["within_limits"] for entry in report["networks"].values())
    return report


def runtimes(report: dict) -> dict:
    """network -> {runtime, precision} for the configs, from a precision report."""
    return {name: {"runtime": entry["runtime"], "precision": entry["runtime_precision"]}
            for name, entry in report.get("networks", {}).items() if entry["runtime"] != "onnxruntime"}
