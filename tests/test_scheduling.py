"""The stream model's scheduler (serving/steps/scheduling.py), on a classifier whose answers the test releases."""

import asyncio

import pytest

from ser_triton.serving.steps.scheduling import DROPPED, FINAL, INTERIM, TENTATIVE, Scheduler


class Held:
    """A classifier that starts each span when asked and answers it when the test releases it."""

    def __init__(self):
        self.started, self.gates = [], {}

    async def __call__(self, span):
        self.started.append(span)
        self.gates[span] = asyncio.Event()
        await self.gates[span].wait()
        if span.startswith("bad"):
            raise RuntimeError(f"{span} failed")
        return f"answer {span}"

    def release(self, span):
        self.gates[span].set()


def run(scenario):
    return asyncio.run(scenario())


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_finished_utterances_go_before_interims_and_each_kind_oldest_first():
    async def scenario():
        classify = Held()
        scheduler = Scheduler(classify, in_flight=1)
        first = scheduler.submit("a", "a-final-1", FINAL)
        interim_b = scheduler.submit("b", "b-interim", INTERIM)
        interim_c = scheduler.submit("c", "c-interim", INTERIM)
        final_d = scheduler.submit("d", "d-final", FINAL)
        await settle()
        assert classify.started == ["a-final-1"] and scheduler.queued == 3
        for span in ("a-final-1", "d-final", "b-interim", "c-interim"):
            await settle()
            assert classify.started[-1] == span
            classify.release(span)
        assert [await f for f in (first, final_d, interim_b, interim_c)] == [
            "answer a-final-1", "answer d-final", "answer b-interim", "answer c-interim"]
    run(scenario)


def test_a_waiting_interim_is_dropped_when_its_stream_has_something_newer():
    async def scenario():
        classify, drops = Held(), []
        scheduler = Scheduler(classify, in_flight=1, on_drop=lambda: drops.append(1))
        busy = scheduler.submit("x", "x-final", FINAL)
        old = scheduler.submit("a", "a-interim-1", INTERIM)
        newer = scheduler.submit("a", "a-interim-2", INTERIM)  # the older one is stale
        other = scheduler.submit("b", "b-interim", INTERIM)
        assert await old is DROPPED and scheduler.dropped == 1 and drops == [1]
        end = scheduler.submit("a", "a-final", FINAL)  # the newer one is stale now too
        assert await newer is DROPPED and scheduler.dropped == 2
        await settle()
        classify.release("x-final")
        await settle()
        classify.release("a-final")
        await settle()
        classify.release("b-interim")
        assert (await busy, await end, await other) == ("answer x-final", "answer a-final", "answer b-interim")
        assert classify.started == ["x-final", "a-final", "b-interim"]  # the dropped ones never ran
    run(scenario)


def test_a_running_interim_is_never_dropped_and_no_limit_runs_everything_at_once():
    async def scenario():
        classify = Held()
        scheduler = Scheduler(classify, in_flight=None)
        interim = scheduler.submit("a", "a-interim", INTERIM)
        final = scheduler.submit("a", "a-final", FINAL)
        await settle()
        assert classify.started == ["a-interim", "a-final"] and scheduler.dropped == 0
        classify.release("a-final")
        classify.release("a-interim")
        assert (await interim, await final) == ("answer a-interim", "answer a-final")
    run(scenario)


def test_a_failed_classification_fails_its_own_future_and_the_next_one_runs():
    async def scenario():
        classify = Held()
        scheduler = Scheduler(classify, in_flight=1)
        bad = scheduler.submit("a", "bad-final", FINAL)
        good = scheduler.submit("b", "b-final", FINAL)
        await settle()
        classify.release("bad-final")
        with pytest.raises(RuntimeError, match="bad-final failed"):
            await bad
        await settle()
        classify.release("b-final")
        assert await good == "answer b-final"
    run(scenario)
    with pytest.raises(ValueError, match="in_flight must be 1 or more"):
        Scheduler(Held(), in_flight=0)


def test_a_tentative_end_runs_only_on_an_idle_ensemble_and_is_promoted_or_withdrawn():
    async def scenario():
        classify, outcomes = Held(), []
        scheduler = Scheduler(classify, in_flight=2, on_speculation=outcomes.append)
        busy = scheduler.submit("x", "x-final", FINAL)
        early = scheduler.submit("a", "a-tentative", TENTATIVE)
        await settle()
        assert classify.started == ["x-final"]  # a place is free, but the ensemble is not idle
        final = scheduler.promote(early)  # the pause lasted: it is a's answer, moved up
        await settle()
        assert final is early and classify.started == ["x-final", "a-tentative"]
        classify.release("x-final")
        classify.release("a-tentative")
        assert (await busy, await final) == ("answer x-final", "answer a-tentative")
        ahead = scheduler.submit("b", "b-tentative", TENTATIVE)  # idle: it runs at once
        unrun = scheduler.submit("c", "c-tentative", TENTATIVE)  # one runs: it waits
        await settle()
        assert classify.started[-1] == "b-tentative"
        scheduler.withdraw(unrun)  # the speaker went on before it ran
        assert await unrun is DROPPED
        scheduler.withdraw(ahead)  # ... and after this one ran
        classify.release("b-tentative")
        assert await ahead == "answer b-tentative"
        assert outcomes == ["used", "dropped", "wasted"]
        assert scheduler.speculations == {"used": 1, "dropped": 1, "wasted": 1}
        interim = scheduler.submit("d", "d-interim", INTERIM)
        scheduler.submit("d", "d-tentative", TENTATIVE)  # a tentative end makes no interim stale
        await settle()
        classify.release("d-interim")
        assert await interim == "answer d-interim" and scheduler.dropped == 0
    run(scenario)


def test_what_an_abandoned_stream_still_had_waiting_is_never_classified():
    class Stream:
        abandoned = False

    async def scenario():
        classify, gone, going_on = Held(), Stream(), Stream()
        scheduler = Scheduler(classify, in_flight=1)
        busy = scheduler.submit(going_on, "busy-final", FINAL)
        lost = scheduler.submit(gone, "gone-final", FINAL)
        kept = scheduler.submit(going_on, "next-final", FINAL)
        gone.abandoned = True  # its client went away (not its end flag: that leaves its work to finish)
        await settle()
        classify.release("busy-final")
        await settle()
        classify.release("next-final")
        assert (await busy, await lost, await kept) == ("answer busy-final", DROPPED, "answer next-final")
        assert classify.started == ["busy-final", "next-final"]
    run(scenario)
