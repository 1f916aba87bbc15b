"""Packing several distillations into one process: shared teacher forward, independent members."""
import math
import time

import pytest
import torch

from test_kd_core import synthetic, teacher
from test_train import reads_per_step
from zoo.classification.distill import build_students, distill_classifier
from zoo.recipes import get_recipe
from zoo.classification.pack import PackMember, distill_pack
from zoo.trainer import TrainConfig


@pytest.fixture(scope="module")
def data():
    return synthetic(64), synthetic(20, seed=1)


CFG = TrainConfig(batch_size=16, epochs=2, progress=False, log_every=1)


def test_packed_members_train_exactly_as_they_would_alone(data, tmp_path):
    members = [PackMember("kd", "kd", "resnet8", (0,)), PackMember("fitnet", "fitnet", "resnet8", (0,)),
               PackMember("dml", "dml", "resnet8")]
    packed = distill_pack(members, [teacher(0)], *data, CFG, tmp_path / "pack")
    assert packed.finished and set(packed.top1) == {"kd", "fitnet", "dml"} and len(packed.top1["dml"]) == 3
    for member in members:
        alone, _ = distill_classifier(member.recipe, teacher(0) if member.teachers else None, "resnet8",
                                      out_dir=tmp_path / member.name, data=data,
                                      settings={"batch_size": 16, "epochs": 2, "progress": False})
        packed_state = packed.students[member.name][0].state_dict()
        assert all(torch.equal(v, packed_state[k]) for k, v in alone.state_dict().items()), member.name


def test_each_teacher_runs_once_per_step_for_the_whole_pack(data, tmp_path):
    shared, other = teacher(0), teacher(1)
    calls = {"shared": 0, "other": 0}
    members = [PackMember("kd", "kd", "resnet8", (0,)), PackMember("at", "at", "resnet8", (0,)),
               PackMember("rkd", "rkd", "resnet8", (0,)), PackMember("avg", "avg-kd", "resnet8", (0, 1, 0))]
    cfg = TrainConfig(batch_size=16, epochs=1, progress=False)
    hooks = []

    def count(key):
        def hook(*_):
            calls[key] += 1
        return hook

    # count only training steps: the Distillers' shape probes run before fit
    import zoo.classification.pack as pack_module

    real_fit = pack_module.fit

    def fit_counting(*args, **kwargs):
        hooks.extend([shared.register_forward_hook(count("shared")), other.register_forward_hook(count("other"))])
        return real_fit(*args, **kwargs)

    pack_module.fit = fit_counting
    try:
        result = distill_pack(members, [shared, other], *data, cfg, tmp_path)
    finally:
        pack_module.fit = real_fit
        for h in hooks:
            h.remove()
    assert result.step == 4 and calls == {"shared": 4, "other": 4}


def test_pack_stops_at_the_deadline_and_resumes_exactly(data, tmp_path):
    members = [PackMember("kd", "kd", "resnet8", (0,)), PackMember("crd", "crd", "resnet8", (0,))]
    whole = distill_pack(members, [teacher(0)], *data, CFG, tmp_path / "whole")
    cut = distill_pack(members, [teacher(0)], *data, CFG, tmp_path / "cut", deadline=time.monotonic())
    assert not cut.finished and cut.step == 1 and cut.top1 == {}
    resumed = distill_pack(members, [teacher(0)], *data, CFG, tmp_path / "cut", resume=True)
    assert resumed.finished and resumed.top1 == whole.top1
    a = torch.load(tmp_path / "whole" / "train_state.pt", weights_only=True)["module"]
    b = torch.load(tmp_path / "cut" / "train_state.pt", weights_only=True)["module"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pack_rejects_bad_members(data, tmp_path):
    t = [teacher(0)]
    with pytest.raises(ValueError, match="unique"):
        distill_pack([PackMember("a", "kd", "resnet8", (0,))] * 2, t, *data, CFG, tmp_path)
    with pytest.raises(ValueError, match="takes 1 teacher"):
        distill_pack([PackMember("a", "kd", "resnet8")], t, *data, CFG, tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        distill_pack([PackMember("a", "kd", "resnet8", (3,))], t, *data, CFG, tmp_path)
    with pytest.raises(ValueError, match="same for the whole pack"):
        distill_pack([PackMember("a", "kd", "resnet8", (0,), {"lr": 0.5})], t, *data, CFG, tmp_path)
    with pytest.raises(ValueError, match="two packs"):
        distill_pack([PackMember("a", "takd", "resnet8", (0,))], t, *data, CFG, tmp_path)


def test_a_diverging_member_stops_alone_and_is_reported(data, tmp_path):
    # fitnet's weight 1e39 is a finite number but overflows float32: its loss is inf at the first step
    members = [PackMember("kd", "kd", "resnet8", (0,)), PackMember("fitnet", "fitnet", "resnet8", (0,),
                                                                  {"fitnet.weight": 1e39})]
    with pytest.warns(RuntimeWarning, match="fitnet"):
        result = distill_pack(members, [teacher(0)], *data, CFG, tmp_path)
    assert result.finished and result.failed == {"fitnet": 0}
    assert math.isnan(result.top1["fitnet"][0])
    from zoo.classification.evaluate import evaluate

    assert result.top1["kd"][0] == evaluate(result.students["kd"][0], data[1])["top1"]  # reported = measured
    untouched = build_students(get_recipe("fitnet"), "resnet8", data[0], CFG.seed)[0].state_dict()
    assert all(torch.equal(v, result.students["fitnet"][0].state_dict()[k]) for k, v in untouched.items()
               if "num_batches" not in k and "running" not in k)


def test_a_member_failing_between_deferred_checks_is_masked_on_the_device(data, tmp_path):
    """With the GPU's deferred checks the failing member is reported at the step it failed and the others
    train exactly as they do when every step is checked."""
    members = [PackMember("kd", "kd", "resnet8", (0,)), PackMember("fitnet", "fitnet", "resnet8", (0,),
                                                                  {"fitnet.weight": 1e39})]
    deferred_cfg = TrainConfig(**{**CFG.__dict__, "finite_check_every": 3})
    with pytest.warns(RuntimeWarning, match="fitnet.*step 0"):
        deferred = distill_pack(members, [teacher(0)], *data, deferred_cfg, tmp_path / "deferred")
    with pytest.warns(RuntimeWarning, match="fitnet"):
        every_step = distill_pack(members, [teacher(0)], *data, CFG, tmp_path / "every")
    assert deferred.finished and deferred.failed == {"fitnet": 0} and math.isnan(deferred.top1["fitnet"][0])
    a, b = deferred.students["kd"][0].state_dict(), every_step.students["kd"][0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("check_every, expect_reads", [(1000, False), (1, True)])
def test_deferred_pack_steps_read_nothing_back_from_the_device(data, tmp_path, monkeypatch, check_every, expect_reads):
    members = [PackMember("kd", "kd", "resnet8", (0,)), PackMember("at", "at", "resnet8", (0,)),
               PackMember("dml", "dml", "resnet8")]
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 1, "batch_size": 4, "log_every": 1000, "checkpoint_every": 1000,
                         "finite_check_every": check_every})
    per_step = reads_per_step(monkeypatch, lambda hook: distill_pack(members, [teacher(0)], *data, cfg, tmp_path,
                                                                     on_step_end=hook))
    assert len(per_step) >= 10
    assert all(n > 0 for n in per_step) if expect_reads else per_step == [0] * len(per_step)
