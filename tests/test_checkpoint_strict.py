"""Strict loading: every tensor loaded, expected missing or ignored with a reason, else an error naming it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from havic import checkpoints as ck


def net():
    return nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))


def test_load_with_report_loads_everything():
    src, dst = net(), net()
    report = ck.load_with_report(dst, src.state_dict())
    assert sorted(report.loaded) == sorted(src.state_dict()) and report.ok
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_load_with_report_names_every_problem_and_loads_nothing():
    dst = net()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = net().state_dict()
    del sd["1.bias"]
    sd["2.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(4, 2)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_with_report(dst, sd)
    msg = str(err.value)
    assert "missing from the checkpoint (1): 1.bias" in msg
    assert "unexpected in the checkpoint (1): 2.weight" in msg
    assert "0.weight checkpoint [4, 2] vs model [3, 2]" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_load_with_report_expected_missing_and_ignored():
    dst = net()
    norm_before = dst[1].weight.detach().clone()
    sd = {k: v for k, v in net().state_dict().items() if k.startswith("0.")}
    sd["extra.table"] = torch.zeros(5)
    report = ck.load_with_report(dst, sd, expected_missing=["1.*"], ignored={"extra.*": "fixed table"})
    assert report.missing == ["1.weight", "1.bias"] and report.unexplained_missing == []
    assert report.ignored == {"extra.table": "fixed table"}
    assert torch.equal(dst[1].weight, norm_before) and torch.equal(dst[0].weight, sd["0.weight"])
    text = report.summary()
    assert "loaded 2 tensors; left at their current values 2; ignored 1" in text and "fixed table" in text
