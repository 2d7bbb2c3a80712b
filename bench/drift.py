"""How far each served variant's answers are from served fp32's, on the whole workload.

Label agreement, transcript CER and the largest probability difference come from the answers the
server gave the client library (batched as the server batches them), compared with
export.drift.answer_drift (evaluation.metrics, as ser-evaluate compares two servers). The smallest hidden-state
cosine and the agreement of decisive CTC frames come from the export's own measurement on the same
workload (export.precision: each network's outputs against fp32's, on fp32 inputs). The limits
are export.precision.DRIFT_LIMITS.
"""

from ser_triton.export.drift import answer_drift
from ser_triton.export.precision import DRIFT_LIMITS


def measured_by_the_export(export_report: dict, key: str, default):
    choice = export_report.get("precision_choice")
    return choice["chain_drift_vs_fp32"][key] if choice else default


def drift(fp32: list[dict], variant: list[dict], export_report: dict) -> dict:
    answers = answer_drift(fp32, variant)
    return {
        **{key: answers[key] for key in ("label_agreement", "decisive_label_agreement", "decisive_utterances",
                                         "transcript_cer", "max_probability_diff")},
        "min_hidden_cosine": measured_by_the_export(export_report, "min_hidden_cosine", 1.0),
        "decisive_frame_agreement": measured_by_the_export(export_report, "decisive_frame_agreement", 1.0),
        "utterances": answers["utterances"],
    }


def violations(measured: dict) -> list[str]:
    return DRIFT_LIMITS.violations(measured)
