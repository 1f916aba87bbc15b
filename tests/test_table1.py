"""benchmarks/table1.py end to end on a few real Fashion-MNIST images: jobs, time budget, resume, outputs."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("table1", ROOT / "benchmarks" / "table1.py")
table1 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table1)


def test_every_method_of_the_survey_is_a_job_member():
    members = {m.name for job in table1.jobs([0, 1, 2]) for m in job["members"]}
    assert set(table1.SURVEY_CIFAR10) <= members
    assert len(table1.SURVEY_CIFAR10) == 16


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_table_runs_in_chunks_and_resumes(tmp_path):
    args = ["--out", str(tmp_path / "run"), "--results", str(tmp_path / "res"), "--train-subset", "128",
            "--test-subset", "100", "--epochs", "1", "--batch-size", "64", "--seeds", "0", "1",
            "--set", "progress=false"]
    assert table1.main(args + ["--time-budget", "0"]) == 0  # stops after the first step of the first job
    rows = list(csv.DictReader(open(tmp_path / "res" / "table1-fmnist.csv")))
    assert rows == []
    assert (tmp_path / "run" / "jobs" / "teachers-s0" / "train_state.pt").exists()
    assert table1.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "res" / "table1-fmnist.csv")))
    assert len(rows) == 16 * 2 and {r["method"] for r in rows} == set(table1.SURVEY_CIFAR10)
    assert all(r["top1"] == "nan" or 0.0 <= float(r["top1"]) <= 100.0 for r in rows)
    md = (tmp_path / "res" / "table1-fmnist.md").read_text()
    assert "| okddip | online |" in md and "94.01" in md
    assert (tmp_path / "res" / "table1-fmnist.png").stat().st_size > 1000
    assert table1.main(args + ["--publish", "takd_assistant", "spkd", "--publish-dest", str(tmp_path / "pub")]) == 0
    import zoo

    ta = zoo.load(tmp_path / "pub" / "resnet32-takd-assistant.fmnist")
    row = ta.card.extra["table1"]
    assert 1 <= row["runs"] <= 2 and row["shipped_seed"] in (0, 1) and ta.card.method == "kd"
    training = ta.card.training  # the packed job's wall time and hardware, and the table's own command
    assert training.wall_time_s > 0 and training.hardware.startswith("CPU")
    assert "--train-subset 128" in training.command and "--publish takd_assistant spkd" in training.command
    assert "zoo publish" not in training.command and "a pack of" in training.notes
    spkd = zoo.load(tmp_path / "pub" / "resnet20-spkd.fmnist").card
    assert spkd.extra["table1"]["survey_cifar10"] == 93.14 and spkd.teacher.name.startswith("resnet56")
    with pytest.raises(SystemExit, match="other settings"):
        table1.main([a if a != "128" else "256" for a in args])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_pretrained_teacher_teaches_every_kd_row_and_gets_its_own_results(tmp_path):
    args = ["--out", str(tmp_path / "run"), "--results", str(tmp_path / "res"), "--train-subset", "64",
            "--test-subset", "50", "--epochs", "1", "--batch-size", "64", "--seeds", "0", "--set", "progress=false",
            "--teacher", "resnet56.fmnist"]
    assert table1.main(args + ["--publish", "at", "--publish-dest", str(tmp_path / "pub")]) == 0
    stem = tmp_path / "res" / "table1-fmnist-teacher-resnet56-fmnist"
    assert len(list(csv.DictReader(open(f"{stem}.csv")))) == 16
    assert "Teacher of the KD rows: resnet56.fmnist (94.39%)" in open(f"{stem}.md").read()
    methods = [j for j in json.loads(open(f"{stem}.json").read())["jobs"] if j["job"] == "methods-s0"]
    assert methods[0]["teachers"][0] == table1.PRETRAINED
    import zoo

    card = zoo.load(tmp_path / "pub" / "resnet20-at.fmnist").card
    assert card.teacher.name == "resnet56.fmnist" and card.teacher.metrics["top1"] == 0.9439
    with pytest.raises(SystemExit, match="other settings"):  # a run keeps its teacher
        table1.main(args[:-2])


RESULTS = ROOT / "benchmarks" / "results"


PUBLISHED_TABLES = sorted(p.stem for p in RESULTS.glob("table1-*.csv"))


def test_both_table_variants_are_benchmarks_not_zoo_entries():
    """Table 1's students did not beat their plain twin (reduced budget, a teacher barely ahead): the tables
    stay as benchmarks, and their students left the zoo (the twin protocol's students replace them)."""
    import zoo

    assert PUBLISHED_TABLES == ["table1-fmnist", "table1-fmnist-teacher-resnet56-fmnist"]
    assert not [c.name for c in zoo.list_models() if "table1" in c.extra and c.method != "plain"]


@pytest.mark.parametrize("stem", PUBLISHED_TABLES)
def test_published_table_is_complete_and_matches_readme_and_cards(stem):
    """A committed Table 1 run: 16 rows x 3 seeds, its markdown in the README, and every bundled
    Table 1 student's card row recomputed from the JSON's runs of the table it names."""
    import statistics

    import zoo

    rows = list(csv.DictReader(open(RESULTS / f"{stem}.csv")))
    assert {(r["method"], int(r["seed"])) for r in rows} == {(m, s) for m in table1.SURVEY_CIFAR10 for s in (0, 1, 2)}
    assert len(rows) == 48
    md = (RESULTS / f"{stem}.md").read_text(encoding="utf-8")
    assert md.strip() in (ROOT / "README.md").read_text(encoding="utf-8"), \
        f"stale: copy benchmarks/results/{stem}.md into README.md"

    by_method: dict[str, dict[int, float]] = {}  # every cohort member (TAKD's assistant too), from the JSON
    for job in json.loads((RESULTS / f"{stem}.json").read_text())["jobs"]:
        for member, scores in job["top1"].items():
            by_method.setdefault(member, {})[job["seed"]] = scores[0] * 100
    assert all(by_method[r["method"]][int(r["seed"])] == pytest.approx(float(r["top1"]), abs=0.006) for r in rows)
    cards = [c for c in zoo.list_models() if "table1" in c.extra and c.extra["table1"].get("table", "table1-fmnist") == stem]
    for card in cards:
        row = card.extra["table1"]
        seeds = by_method[row["method"]]
        assert row["mean"] == pytest.approx(statistics.mean(seeds.values()), abs=0.006)
        assert row["std"] == pytest.approx(statistics.stdev(seeds.values()), abs=0.006)
        assert row["shipped_seed"] == max(seeds, key=seeds.get)
        assert row["shipped_top1"] == pytest.approx(seeds[row["shipped_seed"]], abs=0.006)


def test_rows_without_a_teacher_are_the_same_in_both_tables():
    """ResNet-56, ResNet-20 and the online rows do not depend on --teacher. The --teacher run reused the
    first run's teachers jobs (copied: same settings and code path), and trained the online rows again in its
    own packs: they agree to the last digit (a pack trains each member exactly as alone)."""
    def rows(stem):
        return {(r["method"], r["seed"]): r["top1"] for r in csv.DictReader(open(RESULTS / f"{stem}.csv"))}

    own, trained = rows("table1-fmnist"), rows("table1-fmnist-teacher-resnet56-fmnist")
    same = [k for k in own if k[0] in ("resnet56", "resnet20", *table1.ONLINE)]
    assert len(same) == 15 and all(own[k] == trained[k] for k in same)
    assert sum(trained[k] != own[k] for k in own if k[0] in table1.SINGLE_TEACHER) >= 20
