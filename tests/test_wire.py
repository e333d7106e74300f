"""The grader's wire format: what a kernel sends back is read as data, never run."""
import base64
import json
import pickle

import pytest
import torch

from van_edu.grading import wire


def test_values_round_trip_with_their_types():
    value = {"n": 3, "x": 2.5, "nan": float("nan"), "t": torch.arange(6.0).view(2, 3), "pair": (1, [2, 3]),
             "dtype": torch.bfloat16, "flag": True, "none": None, "big": 2**70,
             "h": wire.Handle(4, "LKA", True), "p": wire.ParamRef(4, "conv0.weight")}
    back = wire.loads(wire.dumps(value))
    assert back["n"] == 3 and type(back["n"]) is int and back["flag"] is True and back["big"] == 2**70
    assert back["pair"] == (1, [2, 3]) and back["dtype"] is torch.bfloat16 and back["nan"] != back["nan"]
    assert torch.equal(back["t"], value["t"]) and back["h"] == value["h"] and back["p"] == value["p"]
    param = wire.loads(wire.dumps(torch.nn.Parameter(torch.ones(2))))
    assert isinstance(param, torch.nn.Parameter)


@pytest.mark.parametrize("doc, why", [
    ({"$t": "float32", "shape": [2, 2], "b64": base64.b64encode(b"\0" * 12).decode()}, "needs 16 bytes"),
    ({"$t": "object", "shape": [1], "b64": ""}, "unknown dtype"),
    ({"$t": "float32", "shape": [-1], "b64": ""}, "shape"),
    ({"$obj": "1"}, "integer id"),
    ({"$float": "1e400"}, "bad float"),
    ({"__reduce__": "os.system"}, "known tag"),
])
def test_malformed_documents_are_refused(doc, why):
    with pytest.raises(wire.WireError, match=why):
        wire.loads(json.dumps(doc))


def test_pickles_deep_nesting_and_huge_answers_are_refused():
    with pytest.raises(wire.WireError):
        wire.loads(pickle.dumps({"a": 1}))            # not JSON: never unpickled
    with pytest.raises(wire.WireError, match="RecursionError"):
        wire.loads("[" * 5000 + "]" * 5000)           # too deep for the JSON reader itself
    with pytest.raises(wire.WireError, match="nested too deeply"):
        wire.loads("[" * 60 + "]" * 60)               # deeper than any answer has reason to be
    with pytest.raises(wire.WireError, match="larger than"):
        wire.loads(" " * (wire.MAX_BYTES + 1))
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.dumps(object())
