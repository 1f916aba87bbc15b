"""The unified compression-and-accuracy score (`zoo.score`) ranks simple cases as intended."""
import math

import pytest

import zoo
from zoo.cli import main
from zoo.registry import ModelCard
from zoo.score import QUALITY_WEIGHT, combine, compression_bits, rank, retention, score_card, score_cards

TEACHER = {"name": "teacher.unit", "metrics": {"top1": 0.80}, "params": 1_000_000}


def student(name="s", top1=0.78, params=250_000, flops=None, latency=None, env="", teacher=TEACHER, baseline=None,
            task="classification", metrics=None):
    return ModelCard(name=name, task=task, architecture="resnet8", dataset="d", split="test",
                     metrics=metrics or {"top1": top1}, params=params, method="kd", teacher=teacher, flops=flops,
                     latency_ms={"cpu_bs1": latency} if latency else {}, latency_env=env, baseline=baseline)


def test_the_formula():
    s = score_card(student(top1=0.76, params=250_000))
    assert s.retention == pytest.approx(0.95) and s.compression == {"params": pytest.approx(2.0)}
    assert s.value == pytest.approx(2.0 + QUALITY_WEIGHT * math.log2(0.95)) and s.reason is None and s.axes == ["params"]
    assert retention(2.0, 1.0, higher_is_better=False) == 0.5  # lower is better: teacher / student
    assert compression_bits(8, 1) == 3 and combine(1.0, {"params": 1.0, "macs": 3.0}) == 2.0


def test_the_weight_makes_the_plain_resnet_family_score_about_zero():
    """torchvision ResNet-18 against ResNet-34 (params and top-1 from torchvision's weights metadata): a student that
    trades quality for size as the plain family does scores about 0 bits."""
    r18 = student(top1=0.69758, params=11_689_512,
                  teacher={"name": "resnet34", "metrics": {"top1": 0.73314}, "params": 21_797_672})
    assert score_card(r18).value == pytest.approx(0.0, abs=0.01)


def test_a_smaller_student_with_equal_retention_ranks_higher():
    small, large = student("small", params=100_000), student("large", params=400_000)
    scores = score_cards([large, small], lookup=lambda name: None)
    assert scores["small"].retention == scores["large"].retention
    assert scores["small"].value > scores["large"].value and rank(scores) == ["small", "large"]


def test_at_equal_size_the_better_student_ranks_higher_and_a_worse_one_by_the_exchange_rate():
    a, b = student("a", top1=0.78), student("b", top1=0.70)
    scores = score_cards([a, b], lookup=lambda name: None)
    assert rank(scores) == ["a", "b"]
    # halving the size is worth w bits of log-retention: b at a quarter of a's size outranks a only if it keeps enough
    c = student("c", top1=0.78 * 2 ** (-2 / QUALITY_WEIGHT) + 1e-4, params=250_000 // 4)
    assert score_cards([a, c], lookup=lambda name: None)["c"].value > scores["a"].value


def test_a_student_worse_than_its_twin_is_flagged():
    twin = {"name": None, "method": "plain", "metrics": {"top1": {"mean": 0.785, "std": 0.001, "n": 3}}}
    worse = score_card(student(top1=0.78, baseline=twin))
    assert "below-twin" in worse.flags and worse.value is not None  # the number stays, with the flag beside it
    better = score_card(student(top1=0.79, baseline=twin))
    assert "below-twin" not in better.flags
    assert "beats-teacher" in score_card(student(top1=0.81)).flags


def test_missing_pieces_give_none_with_the_reason():
    s = score_card(student(teacher={"name": "t", "metrics": {}, "params": 1_000_000}))
    assert s.value is None and "teacher's top1 is not recorded" in s.reason
    s = score_card(student(teacher=None))
    assert s.value is None and "no teacher" in s.reason
    s = score_card(student(teacher={"name": "t", "metrics": {"top1": 0.8}, "params": None}))
    assert s.value is None and "no cost known" in s.reason and s.retention == pytest.approx(0.975)
    gan = student(task="gan", metrics={"fd_mnv2": 0.0}, teacher={"name": "t", "metrics": {"fd_mnv2": 1.0}, "params": 10})
    s = score_card(gan)
    assert s.value is None and "positive metric values" in s.reason


def test_a_lower_is_better_metric_is_inverted():
    worse = student(task="gan", metrics={"fd_mnv2": 2.0}, teacher={"name": "t", "metrics": {"fd_mnv2": 1.0}, "params": 1000},
                    params=1000)
    assert score_card(worse).retention == pytest.approx(0.5)


def test_macs_and_latency_come_from_the_teacher_card_latency_only_from_the_same_machine():
    teacher = ModelCard(name="teacher.unit", task="classification", architecture="resnet56", dataset="d", split="test",
                        metrics={"top1": 0.80}, params=1_000_000, flops=800, latency_ms={"cpu_bs1": 8.0}, latency_env="cpu A")
    same = score_card(student(flops=200, latency=2.0, env="cpu A"), teacher)
    assert same.compression == {"params": pytest.approx(2.0), "macs": pytest.approx(2.0), "latency": pytest.approx(2.0)}
    other = score_card(student(flops=200, latency=2.0, env="cpu B"), teacher)
    assert other.axes == ["params", "macs"]


def test_compare_shows_the_score_beside_the_raw_numbers(capsys):
    rows = {r["name"]: r for r in zoo.compare(task="classification", dataset="fashion-mnist")}
    kd = rows["resnet8-kd.fmnist"]
    assert kd["value"] > 0.9 and kd["params"] and kd["gain_over_twin"] is not None  # the raw numbers are all there
    detail = kd["score_detail"]
    assert kd["score"] == pytest.approx(detail["value"]) and detail["unit"] == "bits" and "params" in detail["axes"]
    assert 0.9 < detail["retention"] < 1.0
    assert rows["resnet8.fmnist"]["score"] is None and "no teacher" in rows["resnet8.fmnist"]["score_detail"]["reason"]
    assert main(["compare", "--task", "nlp"]) == 0
    out = capsys.readouterr().out
    assert "score (bits)" in out and "retained" in out and "tinybert-kd" in out
    assert "tinybert-kd: below its plain twin" not in out  # re-made under the protocol: above its twin
    assert main(["compare", "--task", "classification", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)["rows"]
    assert all("score" in r and "score_detail" in r and "value" in r for r in rows)
