"""The systems ser-evaluate runs over a data set, each giving one prediction record per utterance.

- a served ensemble, through the client library (`SERClient.classify_many`), no torch;
- the PyTorch research pipeline (`--reference`), which needs the export extras: it is imported
  only by `research_code()`, only when asked for.
"""

import time
from dataclasses import dataclass, field

from tqdm import tqdm

from ser_triton.core.audio import AudioError, load_audio
from ser_triton.core.contract import ENSEMBLE
from ser_triton.evaluation.datasets import Utterance
from ser_triton.client.library import ClientError, SERClient, ServerUnreachable
from ser_triton.core.result import Result


@dataclass
class Run:
    """One system's outcomes on a list of utterances: a Result or the exception, per utterance."""

    name: str
    description: dict
    outcomes: list = field(default_factory=list)
    throughput: dict = field(default_factory=dict)

    def timed(self, wall_s: float) -> None:
        """Record the run's throughput over `wall_s` seconds, counting the utterances it classified."""
        results = [o for o in self.outcomes if isinstance(o, Result)]
        audio_seconds = sum(r.duration for r in results)
        self.throughput = {
            "wall_s": wall_s,
            "utterances_per_s": len(results) / wall_s if wall_s else None,
            "audio_seconds_per_s": audio_seconds / wall_s if wall_s else None,
            "audio_seconds": audio_seconds,
        }


def prediction_record(result: Result, utterance: Utterance | None = None) -> dict:
    """The record evaluation.metrics scores and compares, of one answer: its label, probabilities
    and transcript under the result's file as id; with the labelled utterance it answers, one line
    of predictions.jsonl (the utterance's id, gold label, reference transcript, ...)."""
    answer = {"predicted_label": result.label, "probabilities": result.probabilities, "transcript": result.transcript}
    if utterance is None:
        return {"id": result.file, **answer}
    return {
        "id": utterance.id,
        "file": str(utterance.path),
        "gold_label": utterance.label,
        **answer,
        "reference_transcript": utterance.text,
        "speaker": utterance.speaker,
        "session": utterance.session,
        "duration": result.duration,
    }


def failure_reason(error: Exception, system: str) -> tuple[str, str]:
    """(reason counted in the summary, this utterance's detail) for a failed utterance."""
    if isinstance(error, AudioError):
        return "unusable audio", str(error)
    if isinstance(error, ClientError):
        return f"{system}: server error", str(error)
    return f"{system}: {type(error).__name__}", str(error)


class SystemUnavailable(RuntimeError):
    """A system cannot run at all (server down, research code missing); the message says what to do."""


def _progress(name: str, total: int) -> tqdm:
    return tqdm(total=total, desc=name, unit="utt", dynamic_ncols=True, disable=None)


def run_served(name: str, client: SERClient, utterances: list[Utterance], concurrency: int) -> Run:
    """classify_many over the utterances; SystemUnavailable when the server cannot be reached."""
    url, protocol = client.settings.url, client.settings.protocol
    description = {"name": name, "kind": "served", "url": url, "protocol": protocol, "ensemble": ENSEMBLE,
                   "concurrency": concurrency}
    if not client.ready():
        raise SystemUnavailable(
            f"cannot reach the SER server at {url} over {protocol}, or its {ENSEMBLE!r} ensemble "
            f"is not ready: start it with `make serve`; or check the URL and protocol")
    try:  # one untimed request, so the throughput leaves out the server's first-request set-up
        client.classify(utterances[0].path)
    except (AudioError, ClientError):
        pass  # the timed run meets the same problem and reports it
    run = Run(name, description)
    with _progress(name, len(utterances)) as progress:
        started = time.perf_counter()
        run.outcomes = client.classify_many([u.path for u in utterances], concurrency=concurrency,
                                            names=[str(u.path) for u in utterances],
                                            on_result=lambda index, outcome: progress.update())
        run.timed(time.perf_counter() - started)
    unreachable = next((o for o in run.outcomes if isinstance(o, ServerUnreachable)), None)
    if unreachable is not None:
        raise SystemUnavailable(str(unreachable))
    return run


def research_code():
    """(reference module, sources module) of the PyTorch research pipeline: the one place that imports it."""
    try:
        from ser_triton.model import reference, sources
    except ImportError as error:
        raise SystemUnavailable(
            f"--reference needs the PyTorch research pipeline, which cannot be imported ({error}): "
            f"pip install 'ser-triton[export]'") from None
    return reference, sources


def add_reference_arguments(parser) -> None:
    """The research model's flags (--preset, --checkpoint, ...), as `python -m ser_triton.model.reference` takes them."""
    research_code()[1].add_model_arguments(parser)


def run_reference(args, utterances: list[Utterance]) -> Run:
    """The research pipeline on each utterance, one at a time, exactly as `python -m ser_triton.model.reference`."""
    reference, sources = research_code()
    from ser_triton.model.errors import ModelError

    try:
        components = sources.components_from_args(args)
    except ModelError as error:
        raise SystemUnavailable(f"--reference: {error}") from None
    sources.warn_if_untrained(components)
    pipeline = reference.ResearchPipeline(components)
    run = Run("reference", {"name": "reference", "kind": "pytorch", "model": components.description,
                            "head_trained": components.head_trained})
    with _progress("reference", len(utterances)) as progress:
        started = time.perf_counter()
        for utterance in utterances:
            try:
                run.outcomes.append(pipeline.classify(load_audio(utterance.path), str(utterance.path)))
            except AudioError as error:
                run.outcomes.append(error)
            progress.update()
        run.timed(time.perf_counter() - started)
    return run
