"""The shipped `tinybert-kd` entry: loads offline with its tokenizer, predicts, and its card's accuracy,
parameter and latency comparison with the teacher are real and reproducible."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

import zoo  # noqa: E402
from zoo.nlp.data import LEXNAMES  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return zoo.load("tinybert-kd")


def test_loads_offline_with_its_tokenizer_and_predicts(model):
    assert model.tokenizer is not None and model.card.task == "nlp"
    out = zoo.predict(model, ["a small domesticated carnivore kept as a pet", "move fast on foot"], top_k=3)
    assert [o["label"] in LEXNAMES for o in out] == [True, True]
    assert all(0.0 < t["score"] <= 1.0 for o in out for t in o["top_k"])
    assert len(zoo.predict("tinybert-kd")) == 4  # the bundled sample texts


def test_card_compares_student_and_teacher(model):
    card = model.card
    assert card.teacher is not None and card.teacher.params > 7 * card.params * 0.99
    ratios = card.extra["ratios"]
    assert ratios["params_ratio"] == pytest.approx(card.teacher.params / card.params, rel=1e-2)
    assert ratios["accuracy_share_of_teacher"] == pytest.approx(card.metrics["accuracy"] / card.teacher.metrics["accuracy"], rel=1e-3)
    assert set(card.latency_ms) == {"cpu_bs1", "cpu_bs32"} == set(card.extra["teacher_latency_ms"])
    cfg = card.config["encoder"]
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]) == (4, 312, 1200, 12)
    rows = card.extra["benchmark"]
    assert any("TF-IDF" in r["model"] for r in rows) and any("no distillation" in r["model"] for r in rows)


def test_zoo_eval_reproduces_the_card_accuracy():
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "eval", "tinybert-kd", "--json"], capture_output=True,
                         text=True, check=False)
    report = json.loads(out.stdout)
    assert out.returncode == 0, out.stderr
    assert report["within_tolerance"] and abs(report["delta"]["accuracy"]) <= 0.003


def test_readme_benchmark_table_is_the_cards():
    from pathlib import Path

    from zoo.nlp.publish import benchmark_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert benchmark_markdown(zoo.card("tinybert-kd")) in readme, \
        "stale: copy benchmarks/results/tinybert-kd.md (python -m zoo.nlp.publish) into README.md"


def test_publish_table_of_writes_the_cards_table(tmp_path):
    from zoo.nlp.publish import benchmark_markdown, main

    assert main(["--table-of", "tinybert-kd", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "tinybert-kd.md").read_text() == benchmark_markdown(zoo.card("tinybert-kd"))
    for bad in (["--table-of", "resnet8.fmnist"], ["--table-of", "no-such-entry"], [],
                ["runs/x", "--table-of", "tinybert-kd"]):
        with pytest.raises(SystemExit) as err:
            main([*bad, "--results", str(tmp_path / "bad")])
        assert err.value.code == 2
    assert not (tmp_path / "bad").exists()
