"""The stream client's ordering, without a server: its events come out in the order the server sent
them, whatever order Triton delivers them in (responses of different requests may overtake each other).

ARRIVED is what a client received from the real server, under load, while classifying a two-minute
recording (tests/test_client_server.py's two_minutes): chunk 9's utterance came before chunk 8's
last utterance, speech start and final response, although the server had sent all of those first.
"""

import numpy as np
import pytest
from tritonclient.grpc import InferResult, service_pb2
from tritonclient.utils import serialize_byte_tensor

from ser_triton.client import stream as stream_module
from ser_triton.client.stream import InOrder, LiveStream
from ser_triton.core.contract import END_SAMPLE, EVENT, START_SAMPLE, STREAM
from ser_triton.core.result import StreamEvent

SENT = [  # (request, event, start sample): as the server sent them, finals as None
    (8, "utterance", 1223328), (8, "speech_start", 1280160), (8, "utterance", 1280160),
    (8, "speech_start", 1328288), (8, "utterance", 1328288), (8, "speech_start", 1389728), (8, None, None),
    (9, "utterance", 1389728), (9, "speech_start", 1441440), (9, None, None),
]
ARRIVED = [SENT[i] for i in (0, 1, 2, 3, 7, 4, 5, 6, 8, 9)]


def event(kind: str, start: int) -> StreamEvent:
    return StreamEvent(kind, start, None if kind == "speech_start" else start + 16000)


def released(arrivals, first_request: int = 0) -> list:
    """What InOrder lets go, response by response; the requests before `first_request` are done."""
    order = InOrder()
    order.due = first_request
    out = []
    for request, kind, start in arrivals:
        out += order.arrived(request, None if kind is None else event(kind, start), final=kind is None)
    return out


def expected(sent) -> list:
    return [event(kind, start) for _, kind, start in sent if kind is not None]


def test_the_arrival_seen_on_the_real_server_comes_out_in_the_order_sent():
    assert expected(ARRIVED) != expected(SENT)  # what the client got was out of order
    assert released(ARRIVED, first_request=8) == expected(SENT)


def test_any_arrival_that_keeps_each_requests_own_order_comes_out_in_the_order_sent():
    """Triton keeps the order within a request, none across requests: every such interleaving of
    several requests (events, then a final each) gives back the order sent, and no event goes out
    before every earlier request has had its final response."""
    rng = np.random.default_rng(7)
    reordered = 0
    for _ in range(300):
        requests = [[(r, kind, 1000 * r + i) for i, kind in
                     enumerate(rng.choice(["speech_start", "interim", "utterance"], rng.integers(0, 4)))]
                    + [(r, None, None)] for r in range(int(rng.integers(1, 6)))]
        sent = [response for responses in requests for response in responses]
        queues, arrived = [list(responses) for responses in requests], []
        while any(queues):
            arrived.append(queues[rng.choice([i for i, q in enumerate(queues) if q])].pop(0))
        reordered += arrived != sent
        order, finals, out = InOrder(), set(), []
        for request, kind, start in arrived:
            finals |= {request} if kind is None else set()
            now = order.arrived(request, None if kind is None else event(kind, start), final=kind is None)
            for going in now:
                assert all(earlier in finals for earlier in range(going.start_sample // 1000))
            out += now
        assert out == expected(sent)
    assert reordered > 100  # the interleavings did reorder


def response(request: int, kind: str | None = None, start: int = 0) -> InferResult:
    """A stream response as tritonclient hands it to the callback: an event, or the empty final one."""
    message = service_pb2.ModelInferResponse(model_name=STREAM, id=str(request))
    message.parameters["triton_final_response"].bool_param = kind is None
    if kind is not None:
        for name, datatype, value in ((EVENT, "BYTES", np.array([[kind.encode()]], dtype=object)),
                                      (START_SAMPLE, "INT64", np.array([[start]], np.int64)),
                                      (END_SAMPLE, "INT64", np.array([[-1 if kind == "speech_start" else start]],
                                                                     np.int64))):
            message.outputs.add(name=name, datatype=datatype, shape=value.shape)
            message.raw_output_contents.append(serialize_byte_tensor(value).item() if datatype == "BYTES"
                                               else value.tobytes())
    return InferResult(message)


@pytest.mark.parametrize("arrivals", [SENT, ARRIVED], ids=["in-order", "as-arrived"])
def test_the_live_stream_yields_the_events_in_the_order_sent_then_ends(arrivals):
    """LiveStream's callback puts the events on its queue through InOrder, and the end of the stream
    (every request's final response) after the last of them."""
    live = LiveStream("127.0.0.1:1", [], 16000, 1.0, {}, {})  # no connection is made: the callback is fed here
    first = SENT[0][0]
    live.in_order.due = first
    live.open = {str(request) for request, _, _ in SENT}
    live.sent_all.set()
    for request, kind, start in arrivals:
        live._callback(result=response(request, kind, start))
    queued = [live.events.get_nowait() for _ in range(live.events.qsize())]
    assert queued[-1] is stream_module._DONE
    assert [(e.event, e.start_sample) for e in queued[:-1]] == [(k, s) for _, k, s in SENT if k is not None]
    live.client.close()
