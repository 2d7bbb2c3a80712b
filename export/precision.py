"""Which precision each network is served in: the variants, the drift limits, and the choice.

A variant is one way to run a network: a runtime (ONNX Runtime or OpenVINO), the precision of its
matrix work, and for int8 how it is quantized and which parts stay fp32. `--precision` names one
variant for every network, or `auto`: per network, the fastest variant on this CPU whose drift
from fp32 stays within DRIFT_LIMITS, measured on real audio through the served chain. Every
choice is recorded with its evidence (time, drift, limits) in export_report.json.
"""

from dataclasses import asdict, dataclass, replace
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


@dataclass(frozen=True)
class Judgement:
    """A variant's drift from fp32 along the chain, against DRIFT_LIMITS."""

    drift: dict
    violations: tuple[str, ...]

    @classmethod
    def of(cls, drift: dict) -> "Judgement":
        return cls(drift, tuple(DRIFT_LIMITS.violations(drift)))

    @property
    def within_limits(self) -> bool:
        return not self.violations

    def entry(self) -> dict:
        return {"drift": self.drift, "violations": list(self.violations), "within_limits": self.within_limits}


@dataclass(frozen=True)
class Candidate:
    """One variant of one network, built and measured alone; then judged along the chain, or not
    (and why not)."""

    variant: Variant
    path: Path
    onnx_file_bytes: int
    batch_dependence: float
    """max |batched - alone| of its outputs: what a padded batch changes."""
    seconds: float | None = None
    """Its time on the timing utterances (auto only: an explicit --precision is not timed)."""
    judgement: Judgement | None = None
    not_judged: str | None = None

    @property
    def within_limits(self) -> bool:
        return self.judgement is not None and self.judgement.within_limits

    def entry(self) -> dict:
        """Its entry among the report's candidates."""
        entry = {"variant": self.variant.describe(), "onnx_file_bytes": self.onnx_file_bytes}
        if self.seconds is not None:
            entry["seconds"] = self.seconds
        entry["max_abs_diff_batched_vs_alone"] = self.batch_dependence
        if self.not_judged is not None:
            entry["judged"] = self.not_judged
        if self.judgement is not None:
            entry.update(self.judgement.entry())
        return entry


@dataclass(frozen=True)
class NetworkChoice:
    """One network's candidates (by variant name, in the order they were built) and the one served."""

    candidates: dict[str, Candidate]
    chosen: str

    @property
    def served(self) -> Candidate:
        return self.candidates[self.chosen]

    def gain(self) -> float:
        """Seconds the served variant saves against fp32 (auto: every candidate is timed)."""
        return self.candidates[FP32.name].seconds - self.served.seconds

    def back_to_fp32(self, judgement: Judgement) -> "NetworkChoice":
        """fp32 served instead, judged now."""
        fp32 = replace(self.candidates[FP32.name], judgement=judgement)
        return NetworkChoice({**self.candidates, FP32.name: fp32}, FP32.name)

    def entry(self) -> dict:
        """Its entry among the report's networks."""
        variant = self.served.variant
        return {"candidates": {name: candidate.entry() for name, candidate in self.candidates.items()},
                "chosen": variant.name, "runtime": variant.runtime, "runtime_precision": variant.runtime_precision,
                "within_limits": self.served.within_limits}


@dataclass(frozen=True)
class PrecisionChoice:
    """Every network's choice for one --precision, with its evidence, and the whole chain's drift
    with the chosen variants."""

    requested: str
    isa: list[str]
    limits: DriftLimits
    audio: str
    """Where the speech it was measured on comes from."""
    utterances: int
    calibration_utterances: int
    threads: int
    networks: dict[str, NetworkChoice]
    chain: Judgement
    """The chain with every chosen variant (the network cosine: each measured on fp32 inputs, where
    tokens line up)."""

    @property
    def within_limits(self) -> bool:
        return self.chain.within_limits and all(choice.served.within_limits for choice in self.networks.values())

    def report(self) -> dict:
        """export_report.json's `precision_choice`."""
        return {"requested": self.requested, "isa": self.isa, "reduce_range": reduce_range(self.isa),
                "limits": asdict(self.limits), "audio": self.audio, "utterances": self.utterances,
                "calibration_utterances": self.calibration_utterances, "threads": self.threads,
                "networks": {name: choice.entry() for name, choice in self.networks.items()},
                "chain_drift_vs_fp32": self.chain.drift, "chain_violations": list(self.chain.violations),
                "within_limits": self.within_limits}

    def runtimes(self) -> dict:
        """network -> {runtime, precision} for the configs (those not served by ONNX Runtime)."""
        return {name: {"runtime": choice.served.variant.runtime, "precision": choice.served.variant.runtime_precision}
                for name, choice in self.networks.items() if choice.served.variant.runtime != "onnxruntime"}


def measure(variant: Variant, path: Path, spec: specs.ModelSpec, evidence: Evidence, threads: int,
            timed: bool) -> Candidate:
    """One variant of one network, alone: its speed (seconds on the timing utterances, with the
    threads it is served with) and how much a padded batch changes its answers."""
    feeds = network_feeds(evidence.reference, spec)
    size = path.stat().st_size
    session = session_factory(path, variant, threads)()
    seconds = round(time_network(session, spec, [feeds[i] for i in evidence.timing]), 4) if timed else None
    return Candidate(variant, path, size, batch_dependence(session, spec, feeds[:4]), seconds)


def judge(variant: Variant, path: Path, spec: specs.ModelSpec, evidence: Evidence, fp32_sessions: dict,
          assets: Path, all_specs: dict) -> Judgement:
    """Its drift from fp32 along the chain (the other networks fp32), against DRIFT_LIMITS."""
    if variant == FP32:
        candidate = evidence.reference
    else:
        candidate = run_chain({**fp32_sessions, spec.name: session_factory(path, variant, 0)}, assets, all_specs,
                              cached=evidence.reference, replaced={spec.name})
    return Judgement.of({"min_hidden_cosine": output_cosine(evidence.reference, candidate, spec),
                         **chain_drift(evidence.reference, candidate, all_specs)})


def choose_variant(requested: str, name: str, fp32: Path, spec, evidence: Evidence, fp32_sessions: dict, assets: Path,
                   all_specs: dict, scratch: Path, isa: list[str], threads: int, log) -> NetworkChoice:
    """One network's variant: for `auto`, every candidate is built and timed, then judged from the
    fastest down until one is within the limits (the slower ones need no judging)."""
    variants = candidates(name, isa) if requested == "auto" else [FIXED[requested]]
    calibration = network_feeds([evidence.reference[i] for i in evidence.calibration], spec)
    cache = scratch / f"{name}.calibration.json"
    measured = {}
    for variant in variants:
        path = variant.build(fp32, scratch / name / variant.name / fp32.name, calibration, reduce_range(isa), cache)
        measured[variant.name] = measure(variant, path, spec, evidence, threads, timed=requested == "auto")
    order = sorted(variants, key=lambda v: measured[v.name].seconds) if requested == "auto" else variants
    chosen = None
    for variant in order:
        if chosen is not None:
            measured[variant.name] = replace(measured[variant.name],
                                             not_judged=f"no: {chosen} is faster and within the limits")
            continue
        candidate = measured[variant.name] = replace(measured[variant.name], judgement=judge(
            variant, measured[variant.name].path, spec, evidence, fp32_sessions, assets, all_specs))
        log.info("%s %s: %s", name, variant.name, {k: v for k, v in candidate.entry().items() if k != "variant"})
        if candidate.within_limits or requested != "auto":
            chosen = variant.name
    for candidate in measured.values():
        if candidate.path != fp32 and candidate.variant.name != chosen:
            network_files.remove(candidate.path)
    return NetworkChoice(measured, chosen)


def choose(requested: str, out: Path, all_specs: dict, audios: list, source: str, scratch: Path, isa: list[str],
           threads: int, log) -> PrecisionChoice:
    """Replace each fp32 network in `out` by its variant for `requested` (auto: the fastest within
    the drift limits), measured on `audios`; returns the choices and their evidence.
    For `auto`, should the chosen networks together break a limit that each kept alone, the one
    that gains least goes back to fp32 until the chain is within the limits."""
    limits = DRIFT_LIMITS
    assets = model_directory(out, specs.CTC_TOKENIZE)
    fp32 = {name: network_file(out, name) for name in specs.ONNX_NETWORKS}
    fp32_sessions = {name: session_factory(path, FP32, 0) for name, path in fp32.items()}  # every core
    log.info("precision %s: the fp32 chain on %d utterances (%s)", requested, len(audios), source)
    evidence = Evidence.of(run_chain(fp32_sessions, assets, all_specs, audios), all_specs)
    choices = {}
    for name in specs.ONNX_NETWORKS:
        choices[name] = choose_variant(requested, name, fp32[name], all_specs[name], evidence, fp32_sessions, assets,
                                       all_specs, scratch, isa, threads, log)
        if not choices[name].served.within_limits:
            log.warning("%s: --precision %s moves the answers past the drift limits (%s): exported anyway",
                        name, requested, "; ".join(choices[name].served.judgement.violations))
    while True:
        replaced = {name for name, choice in choices.items() if choice.served.variant != FP32}
        whole = run_chain({name: session_factory(choice.served.path, choice.served.variant, 0)
                           for name, choice in choices.items()},
                          assets, all_specs, cached=evidence.reference, replaced=replaced)
        chain = Judgement.of({"min_hidden_cosine": min(choice.served.judgement.drift["min_hidden_cosine"]
                                                       for choice in choices.values()),
                              **chain_drift(evidence.reference, whole, all_specs)})
        if chain.within_limits or requested != "auto" or not replaced:
            break
        back = min(replaced, key=lambda name: choices[name].gain())
        log.info("precision auto: together the networks break %s; %s goes back to fp32", list(chain.violations), back)
        choices[back] = choices[back].back_to_fp32(judge(FP32, fp32[back], all_specs[back], evidence, fp32_sessions,
                                                         assets, all_specs))
    for name, choice in choices.items():
        if choice.served.path != fp32[name]:
            network_files.move(choice.served.path, fp32[name])
    return PrecisionChoice(requested, isa, limits, source, len(audios), len(evidence.calibration), threads, choices,
                           chain)
