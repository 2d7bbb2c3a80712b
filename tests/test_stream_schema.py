"""The live stream's one schema (serving/web/ser-stream.schema.json) against the code that speaks it:
the gateway's error codes and close codes, encodings and modes, the labels, the segmentation rules,
the events as the client library writes them, and ser-stream.js's names. No server."""

import dataclasses
import json
import re

import jsonschema
import pytest

from ser_triton.core import contract
from ser_triton.core.result import StreamEvent
from ser_triton.serving.edge import WEB
from ser_triton.serving.steps.segmentation import SegmentationRules
from ser_triton.serving.stream_socket import ENCODINGS, ERRORS, FILE, LIVE, schema, start_problem, validator

DEFINITIONS = schema()["$defs"]


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(schema())
    with pytest.raises(jsonschema.SchemaError):  # positive control: the check does see a broken schema
        jsonschema.Draft202012Validator.check_schema({"type": "no such type"})


def test_the_error_codes_and_their_close_codes_are_the_gateways():
    codes = {entry["const"]: entry["x-close-code"] for entry in DEFINITIONS["error"]["properties"]["code"]["oneOf"]}
    assert codes == {code: int(error.close) for code, error in ERRORS.items()}
    assert all(4000 > close >= 1000 for close in codes.values())  # RFC 6455's own codes


def test_the_start_message_names_what_the_gateway_takes():
    start = DEFINITIONS["start"]["properties"]
    assert start["encoding"]["enum"] == list(ENCODINGS)
    assert start["mode"]["enum"] == [LIVE, FILE] and start["mode"]["default"] == LIVE
    documented = set(start["segmentation"]["properties"])
    rules = {rule.name for rule in dataclasses.fields(SegmentationRules)}
    assert documented <= rules  # no stale name; a rule added later is taken too (additionalProperties)
    every_rule = {name: None if name in ("negative_threshold", "interim_seconds") else 1.0 for name in rules}
    validator("start").validate({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1,
                                 "segmentation": every_rule})


def test_the_events_are_those_the_client_library_writes():
    for definition in ("interim", "utterance"):
        assert DEFINITIONS[definition]["properties"]["label"]["enum"] == list(contract.LABELS)
        assert DEFINITIONS[definition]["properties"]["probabilities"]["required"] == list(contract.LABELS)
    probabilities = dict(zip(contract.LABELS, (0.1, 0.2, 0.3, 0.4)))
    events = [StreamEvent("speech_start", 1600),
              StreamEvent("interim", 1600, 81600, "neutral", probabilities, "SO FAR"),
              StreamEvent("utterance", 1600, 96000, "neutral", probabilities, "THE WHOLE OF IT")]
    for event in events:
        validator("server_message").validate(event.to_json_dict())
        validator(event.event).validate(event.to_json_dict() | {"words": [], "channel": 1})  # new keys pass
    validator("server_message").validate({"event": "end"})
    validator("server_message").validate({"event": "error", "code": "idle_timeout", "message": "nothing came"})
    for wrong in ({"event": "utterance", "start": 0.1}, {"event": "error", "code": "no such code", "message": ""},
                  events[2].to_json_dict() | {"label": "bored"}):
        with pytest.raises(jsonschema.ValidationError):  # positive controls
            validator("server_message").validate(wrong)


@pytest.mark.parametrize("start, words", [
    ({"type": "start", "sample_rate": 16000, "encoding": "mp3", "channels": 1}, "encoding: 'mp3' is not one of"),
    ({"type": "start", "sample_rate": 0, "encoding": "f32le", "channels": 1}, "sample_rate: 0 is less than"),
    ({"type": "start", "sample_rate": 10**9, "encoding": "f32le", "channels": 1}, "sample_rate: 1000000000 is greater"),
    ({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 2}, "channels: 1 was expected"),
    ({"type": "start", "sample_rate": 16000, "encoding": "f32le"}, "'channels' is a required property"),
    ({"type": "start", "sample_rate": "16k", "encoding": "f32le", "channels": 1}, "'16k' is not of type 'integer'"),
    ({"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1, "key": "x"}, "('key' was unexpected)"),
])
def test_a_bad_start_is_one_line_that_says_what_is_wrong(start, words):
    problem = start_problem(start)
    assert problem and words in problem and "\n" not in problem, problem
    good = {"type": "start", "sample_rate": 16000, "encoding": "f32le", "channels": 1, "mode": "file"}
    assert start_problem(good) is None  # positive control


def test_ser_stream_js_speaks_the_contracts_names():
    """The page's module holds the protocol's names for the browser: the same as the server's."""
    source = (WEB / "ser-stream.js").read_text()

    def constant(name):
        return json.loads(re.search(rf"^export const {name} = (.+);$", source, re.MULTILINE).group(1))

    assert constant("PATH") == contract.STREAM_SOCKET_PATH
    assert constant("SUBPROTOCOL") == contract.STREAM_SOCKET_SUBPROTOCOL
    assert constant("KEY_PREFIX") == contract.STREAM_SOCKET_KEY_PREFIX
    assert constant("SAMPLE_RATE") == contract.SAMPLE_RATE
