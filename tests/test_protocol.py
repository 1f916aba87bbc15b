"""The twin protocol: statistics, the table, resumable runs, publishing with a baseline on the card."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import protocol
from zoo.protocol import TWIN, ProtocolSpec, SeedResult

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def twins():
    """benchmarks/twins.py as a module (its main() returns the exit code)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import protocol_bench
    finally:
        sys.path.pop(0)
    return protocol_bench.load_script("twins")


def spec(**kw) -> ProtocolSpec:
    fields = dict(task="classification", teacher="resnet56.fmnist", student="resnet8", recipes=["kd", "at"],
                  seeds=[0, 1, 2], dataset="fashion-mnist", settings={"epochs": 10})
    fields.update(kw)
    return ProtocolSpec(**fields)


def results(values: dict[str, list[float]]) -> list[SeedResult]:
    seeds = range(len(next(iter(values.values()))))
    return [SeedResult(s, {arm: v[s] for arm, v in values.items()}, 100, 1.0, "cpu") for s in seeds]


def test_summary_gains_gap_and_the_spread_rule():
    res = results({TWIN: [0.90, 0.91, 0.92], "kd": [0.93, 0.94, 0.95], "at": [0.915, 0.925, 0.92]})
    s = protocol.summarize(res, [TWIN, "kd", "at"], teacher_value=0.96)
    assert s[TWIN].mean == pytest.approx(0.91) and s[TWIN].std == pytest.approx(0.01)
    assert protocol.twin_spread(s[TWIN]) == pytest.approx(0.02)
    assert s["kd"].gain == pytest.approx(0.03) and s["kd"].gap_closed == pytest.approx(0.6)
    assert s["kd"].beats_twin  # +3 points > the twin's 2-point spread
    assert s["at"].gain == pytest.approx(0.01) and not s["at"].beats_twin  # inside the spread
    assert protocol.median_seed(s["kd"]) == 1
    lower = protocol.summarize(results({TWIN: [3.0, 3.1], "kd": [2.0, 2.2]}), [TWIN, "kd"], 1.0, higher_is_better=False)
    assert lower["kd"].gain == pytest.approx(0.95) and lower["kd"].beats_twin  # lower is better (e.g. a distance)


def test_diverged_seeds_are_counted_but_not_averaged():
    s = protocol.summarize(results({TWIN: [0.9, 0.91], "kd": [math.nan, 0.95]}), [TWIN, "kd"], 0.96)
    assert s["kd"].n == 1 and s["kd"].diverged == 1 and s["kd"].mean == pytest.approx(0.95)
    assert "diverged in 1 seed" in protocol.markdown(spec(recipes=["kd"]), s, 0.96, "top1")


def test_no_twin_no_table():
    with pytest.raises(ValueError, match="twin"):
        protocol.summarize(results({"kd": [0.9, 0.9]}), [TWIN, "kd"], 0.96)


@pytest.mark.parametrize("bad, message", [
    (dict(recipes=[]), "at least one recipe"), (dict(recipes=["plain"]), "always trained"),
    (dict(seeds=[0]), "at least 2 seeds"), (dict(recipes=["kd", "kd"]), "repeat"),
    (dict(train_subset=0), "train_subset must be a number of examples >= 1"),
    (dict(train_subset=True), "train_subset must be a number of examples >= 1"),
])
def test_bad_specs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        spec(**bad)


def test_markdown_table_and_baseline_record():
    s = spec()
    summary = protocol.summarize(results({TWIN: [0.90, 0.91, 0.92], "kd": [0.93, 0.94, 0.95],
                                          "at": [0.915, 0.925, 0.92]}), s.arms, 0.96)
    table = protocol.markdown(s, summary, 0.96, "top1", settings_line="budget line")
    assert "| teacher `resnet56.fmnist` | - | 96.00 | 5.00 |" in table
    assert "| resnet8 | twin (plain) | 91.00 ± 1.00 (3) | - | - | spread 2.00 |" in table
    assert "| resnet8 | kd | 94.00 ± 1.00 (3) | +3.00 | 60% | yes |" in table
    assert "| resnet8 | at | 92.00 ± 0.50 (3) | +1.00 | 20% | no |" in table and "budget line" in table
    record = protocol.baseline_record(s, summary, "top1", 4680, "resnet8.fmnist", "benchmarks/results/x.md")
    assert record["name"] == "resnet8.fmnist" and record["seeds"] == [0, 1, 2]
    assert record["metrics"]["top1"] == {"mean": 0.91, "std": 0.01, "n": 3, "spread": 0.02}
    assert record["budget"] == {"epochs": 10, "steps": 4680}


def test_a_card_baseline_is_validated_and_gives_the_gain(tiny_model):
    from conftest import make_card

    twin = {"name": "resnet8.fmnist", "metrics": {"top1": {"mean": 0.45, "std": 0.01, "n": 3}}}
    card = make_card(tiny_model, method="kd", baseline=twin)
    assert card.gain_over_baseline() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="baseline must hold"):
        make_card(tiny_model, baseline={"metrics": {"top1": 0.45}})
    assert make_card(tiny_model).gain_over_baseline() is None


class FakeTask:
    """A ProtocolTask that 'trains' instantly, stopping at the deadline after the first seed."""

    metric, higher_is_better = "top1", True

    def __init__(self):
        self.calls = []

    def teacher_metric(self, spec):
        return 0.96

    def run_seed(self, spec, seed, out_dir, deadline, device):
        self.calls.append(seed)
        if len(self.calls) == 2 and deadline is not None:
            return None  # the time budget ran out in the second seed
        return SeedResult(seed, {arm: 0.9 + 0.01 * seed + (0.02 if arm != TWIN else 0) for arm in spec.arms},
                          10, 1.0, "cpu")


def test_runs_resume_by_seed_and_refuse_other_settings(tmp_path):
    import time

    task, s = FakeTask(), spec()
    done = protocol.run(s, task, tmp_path, deadline=time.monotonic() + 3600)
    assert [r.seed for r in done] == [0] and task.calls == [0, 1]
    done = protocol.run(s, task, tmp_path)  # finished seeds are read back, not trained again
    assert [r.seed for r in done] == [0, 1, 2] and task.calls == [0, 1, 1, 2]
    table, summary = protocol.write_results(s, task, done, tmp_path / "results")
    assert summary["kd"].gain == pytest.approx(0.02) and table.exists()
    saved = json.loads(table.with_suffix(".json").read_text())
    assert saved["teacher_value"] == 0.96 and len(saved["seeds"]) == 3
    with pytest.raises(ValueError, match=re.escape("other settings (settings.epochs (10 then, 12 now);")):
        protocol.run(spec(settings={"epochs": 12}), task, tmp_path)


def test_a_run_folder_where_nothing_trained_yet_takes_new_settings(tmp_path, capsys):
    task = FakeTask()
    protocol._claim_run_folder(spec(settings={"epochs": 10, "lr": -1}), tmp_path)  # then refused when an arm was built
    (tmp_path / "seed-0" / "twin").mkdir(parents=True)
    (tmp_path / "seed-0" / "twin" / "log.csv").write_text("step\n")  # a start, no checkpoint
    done = protocol.run(spec(), task, tmp_path)  # the fixed command is not refused: nothing would be lost
    assert [r.seed for r in done] == [0, 1, 2] and "no arm has trained yet" in capsys.readouterr().out
    assert json.loads((tmp_path / "protocol.json").read_text())["settings"] == spec().settings
    with pytest.raises(ValueError, match="other settings"):  # once something trained, the folder is that run's
        protocol.run(spec(settings={"epochs": 12}), task, tmp_path)


def test_only_seeds_trains_just_those_and_reads_the_rest(tmp_path):
    task, s = FakeTask(), spec()
    done = protocol.run(s, task, tmp_path, only_seeds=[1])  # another process may be training 0 and 2
    assert task.calls == [1] and [r.seed for r in done] == [1]
    done = protocol.run(s, task, tmp_path, only_seeds=[0, 2])
    assert task.calls == [1, 0, 2] and [r.seed for r in done] == [0, 1, 2]  # seed 1 read back
    with pytest.raises(ValueError, match="--only-seeds 7 are not all among the run's seeds 0 1 2"):
        protocol.run(s, task, tmp_path, only_seeds=[7])


def test_a_run_folder_may_stop_at_fewer_seeds_or_add_seeds(tmp_path, capsys):
    task = FakeTask()
    protocol.run(spec(seeds=[0, 1, 2]), task, tmp_path, only_seeds=[0])
    done = protocol.run(spec(seeds=[0, 1]), task, tmp_path)  # stop at two seeds: seed 0 is kept, 1 trained
    assert [r.seed for r in done] == [0, 1] and task.calls == [0, 1]
    assert json.loads((tmp_path / "protocol.json").read_text())["seeds"] == [0, 1]
    assert "seeds 0 1 2 -> 0 1 (the finished seeds are kept)" in capsys.readouterr().out
    done = protocol.run(spec(seeds=[0, 1, 3]), task, tmp_path)  # and add one later
    assert [r.seed for r in done] == [0, 1, 3] and task.calls == [0, 1, 3]
    with pytest.raises(ValueError, match=re.escape("other settings (recipes (['kd', 'at'] then, ['kd'] now);")):
        protocol.run(spec(seeds=[0, 1], recipes=["kd"]), task, tmp_path)


class ApartTask(FakeTask):
    arms_apart = True  # each arm trains on its own (RunnerProtocol): a run folder may gain recipes


def test_a_run_folder_may_gain_recipes_but_not_lose_them(tmp_path, capsys):
    """A method added to a finished run trains its arm on every seed; the twin and the finished arms are
    kept (FakeTask records a call per seed it trains; the real task reads finished arms from their cards)."""
    task = ApartTask()
    done = protocol.run(spec(recipes=["kd"]), task, tmp_path)
    assert task.calls == [0, 1, 2] and all(set(r.metrics) == {TWIN, "kd"} for r in done)
    done = protocol.run(spec(recipes=["kd", "at"]), task, tmp_path)
    assert task.calls == [0, 1, 2, 0, 1, 2] and all(set(r.metrics) == {TWIN, "kd", "at"} for r in done)
    assert json.loads((tmp_path / "protocol.json").read_text())["recipes"] == ["kd", "at"]
    out = capsys.readouterr().out
    assert "recipes at added" in out
    # the earlier recipes' table is named (it stays in the results folder until the user deletes it)
    assert f"{spec(recipes=['kd']).slug()}.md/.json in the results folder, stays" in out
    done = protocol.run(spec(recipes=["kd", "at"]), task, tmp_path)  # nothing left to train
    assert len(task.calls) == 6 and len(done) == 3
    with pytest.raises(ValueError, match=r"this command drops kd, whose arms would leave the table. A run may gain "
                                         r"recipes but not lose them: give --recipes kd at"):
        protocol.run(spec(recipes=["at"]), task, tmp_path)
    done = protocol.run(spec(recipes=["at", "kd"]), task, tmp_path)  # reordered: nothing to train
    assert len(task.calls) == 6 and "added" not in capsys.readouterr().out


def test_a_task_that_trains_arms_together_keeps_its_recipes(tmp_path):
    """Classification trains a seed's arms in one state: a finished seed cannot gain an arm, and resuming
    with the recipes reordered would hand one arm's optimizer state to another. Both are refused, and
    the run's record is left as it was."""
    task = FakeTask()
    protocol.run(spec(recipes=["kd", "at"]), task, tmp_path)
    record = (tmp_path / "protocol.json").read_text()
    for recipes in (["kd", "at", "fitnet"], ["at", "kd"]):
        with pytest.raises(ValueError, match="trains a seed's arms together, so its run folders cannot gain or "
                                             "reorder recipes"):
            protocol.run(spec(recipes=recipes), task, tmp_path)
    assert (tmp_path / "protocol.json").read_text() == record


def test_a_deadline_still_reads_the_finished_seeds_after_it(tmp_path):
    task = ApartTask()
    protocol.run(spec(recipes=["kd"]), task, tmp_path, only_seeds=[1])
    protocol.run(spec(recipes=["kd", "at"]), task, tmp_path, only_seeds=[1])  # seed 1 gains the new arm
    done = protocol.run(spec(recipes=["kd", "at"]), task, tmp_path, deadline=0.0)  # no time to train seed 0
    assert [r.seed for r in done] == [1] and task.calls == [1, 1]


def test_a_restored_seed_is_not_trained_for_added_recipes_unless_asked(tmp_path, capsys):
    task, s = ApartTask(), spec(recipes=["kd"])
    record = protocol.write_results(s, task, protocol.run(s, task, tmp_path / "old"),
                                    tmp_path / "results")[0].with_suffix(".json")
    protocol.restore_seeds(s, tmp_path / "new", record)
    done = protocol.run(spec(recipes=["kd", "at"]), task, tmp_path / "new")
    assert task.calls == [0, 1, 2] and done == []  # a seed counts once every arm is done
    assert "--only-seeds 0 trains the seed again, every arm" in capsys.readouterr().out


def test_seeds_lost_with_a_run_folder_are_restored_from_the_results_file(tmp_path, capsys):
    task, s = FakeTask(), spec()
    done = protocol.run(s, task, tmp_path / "old")
    record = protocol.write_results(s, task, done, tmp_path / "results")[0].with_suffix(".json")
    out = tmp_path / "new"  # the machine that held "old" is gone; the results file was kept
    protocol.run(s, task, out, only_seeds=[2])
    assert protocol.restore_seeds(s, out, record) == [0, 1]  # seed 2 is there already
    assert protocol.restore_seeds(s, out, record) == []
    calls = len(task.calls)
    again = protocol.run(s, task, out)  # the restored seeds are read, not trained
    assert len(task.calls) == calls and [r.metrics for r in again] == [r.metrics for r in done]
    with pytest.raises(ValueError, match=r"seeds \[0\] .* --only-seeds 0"):
        protocol.unrestored(out, [0, 2])  # no checkpoints to publish for seed 0
    protocol.unrestored(out, [2])
    protocol.run(s, task, out, only_seeds=[0])  # a restored seed asked for explicitly is trained again
    assert task.calls[-1] == 0 and "seed 0 retrained: twin 0.9000 (recorded 0.9000)" in capsys.readouterr().out
    protocol.unrestored(out, [0, 2])
    with pytest.raises(ValueError, match="other settings"):
        protocol.restore_seeds(spec(settings={"epochs": 12}), tmp_path / "other", record)
    with pytest.raises(FileNotFoundError):
        protocol.restore_seeds(s, out, tmp_path / "missing.json")


def test_twins_cli_runs_publishes_winners_only(tmp_path):
    """End to end on real Fashion-MNIST, tiny: 2 seeds, 1 epoch on 256 images (seconds)."""
    out, dest = tmp_path / "run", tmp_path / "zoo"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "twins.py"), "--teacher", "resnet56.fmnist", "--student", "resnet8",
           "--recipes", "kd", "--seeds", "0", "1", "--train-subset", "256", "--set", "epochs=1", "--set", "batch_size=64",
           "--out", str(out), "--publish", "--publish-dest", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2/2 seeds done" in r.stdout
    table = (out / "twins-fashion-mnist-first256-resnet56-fmnist-to-resnet8-kd.md").read_text()
    assert "| resnet8 | twin (plain) |" in table and "| resnet8 | kd |" in table
    saved = json.loads((out / "twins-fashion-mnist-first256-resnet56-fmnist-to-resnet8-kd.json").read_text())
    kd = saved["summary"]["kd"]
    if kd["beats_twin"]:  # published with its twin as the baseline
        import zoo

        card = zoo.card(str(dest / "resnet8-kd.fmnist"))
        assert card.baseline["name"] == "resnet8.fmnist" and card.gain_over_baseline() is not None
        # the card cites the table where --results wrote it (here the run folder, outside the repository)
        assert card.baseline["table"] == str(out / "twins-fashion-mnist-first256-resnet56-fmnist-to-resnet8-kd.md")
        assert (dest / "resnet8.fmnist" / "README.md").exists()
    else:
        assert "not published: kd" in r.stdout and not dest.exists()
    # --no-twin-entry: the same finished run publishes only the winners, under --entry-name; their baseline
    # names no entry
    only = tmp_path / "only"
    r = subprocess.run(cmd[:-1] + [str(only), "--no-twin-entry", "--entry-name", "kd=my-kd"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (only / "resnet8.fmnist").exists() and not (only / "resnet8-kd.fmnist").exists()
    if kd["beats_twin"]:
        import zoo

        card = zoo.card(str(only / "my-kd"))
        assert card.name == "my-kd"
        assert card.baseline["name"] is None and card.baseline["metrics"] == zoo.card(str(dest / "resnet8-kd.fmnist")).baseline["metrics"]
        assert "twin not published (--no-twin-entry)" in r.stdout


def test_bad_specs_are_refused_before_anything_is_written(twins, tmp_path, capsys):
    base = ["--teacher", "resnet56.fmnist", "--student", "resnet8", "--seeds", "0", "1", "--out", str(tmp_path / "p")]
    for recipes, message in ((["nope"], "unknown recipe 'nope'"), (["pkd"], "is for nlp models"),
                             (["dml"], "learns without a teacher"), (["kd"], "unknown setting 'zzz'")):
        extra = ["--set", "zzz=1"] if message.startswith("unknown setting") else []
        assert twins.main(base + ["--recipes", *recipes, *extra]) == 2
        assert message in capsys.readouterr().err
    reported = ["--teacher", "resnet8x4-dkd.cifar100.mdistiller", "--recipes", "kd"]
    assert twins.main(base + reported) == 2
    assert "is another project's published student" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        twins.main(base + ["--recipes", "kd", "--device", "bogus"])
    assert "'bogus' is not a torch device" in capsys.readouterr().err
    for extra, message in ((["--seeds", "-1", "0"], "seeds are numbers >= 0, got [-1, 0]"),
                           (["--set", "seed=5"], "each arm's seed is the protocol's (--seeds); drop the setting seed"),
                           (["--set", "task_weight=0.5"], "task_weight: a recipe's own fields, not a budget setting")):
        assert twins.main(base + ["--recipes", "kd", *extra]) == 2
        assert message in capsys.readouterr().err
    for subset, message in (("10000000", "a subset of fashion-mnist/train needs 1..60000 examples, got 10000000"),
                            ("0", "train_subset must be a number of examples >= 1")):
        assert twins.main(base + ["--recipes", "kd", "--train-subset", subset]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # nothing recorded: the corrected command can use the same folder


def test_twins_cli_restores_seeds_and_refuses_to_publish_what_it_has_no_checkpoint_of(twins, tmp_path, capsys):
    s = spec(recipes=["kd"], seeds=[0, 1], settings={"epochs": 1})
    results_dir, out, dest = tmp_path / "results", tmp_path / "run", tmp_path / "zoo"
    kept = results({TWIN: [0.90, 0.901], "kd": [0.92, 0.921]})
    protocol.write_results(s, FakeTask(), kept, results_dir)
    args = ["--teacher", "resnet56.fmnist", "--student", "resnet8", "--recipes", "kd", "--seeds", "0", "1",
            "--set", "epochs=1", "--out", str(out), "--results", str(results_dir), "--restore"]
    assert twins.main(args + ["--publish", "--publish-dest", str(dest)]) == 2
    captured = capsys.readouterr()
    assert "restored seeds [0, 1]" in captured.out and "2/2 seeds done" in captured.out
    assert "have no checkpoints; train them again with --only-seeds 0" in captured.err
    assert not dest.exists()
    assert twins.main(args + ["--publish", "--keep-twin", "--publish-dest", str(dest)]) == 2  # checked before training
    assert (f"--keep-twin: the twin's entry resnet8.fmnist is not in {dest}; drop --keep-twin"
            in capsys.readouterr().err) and not dest.exists()
    (dest / "resnet8-kd.fmnist").mkdir(parents=True)  # an entry of that name is there: refused before any training
    assert twins.main(args + ["--publish", "--publish-dest", str(dest)]) == 2
    assert "resnet8-kd.fmnist exists already; nothing was published. Pass --overwrite" in capsys.readouterr().err
    (dest / "resnet8-kd.fmnist").rmdir()
    dest.rmdir()
    (tmp_path / "a-file").write_text("x")
    for flag in ("--out", "--results", "--publish-dest"):  # a file where a folder goes: one line, not a traceback
        bad = args + ["--publish", "--publish-dest", str(dest)]
        bad[bad.index(flag) + 1] = str(tmp_path / "a-file")
        assert twins.main(bad) == 2
        assert f"{flag} {tmp_path / 'a-file'} is a file, not a folder" in capsys.readouterr().err
    assert twins.main(args + ["--keep-twin"]) == 2
    assert "--keep-twin only applies with --publish" in capsys.readouterr().err
    assert twins.main(args + ["--no-twin-entry"]) == 2
    assert "--no-twin-entry only applies with --publish" in capsys.readouterr().err
    assert twins.main(args + ["--publish", "--keep-twin", "--no-twin-entry"]) == 2
    assert "exclude each other" in capsys.readouterr().err and not dest.exists()
    for bad in ("kd", "at=x"):
        assert twins.main(args + ["--publish", "--entry-name", bad]) == 2
        assert f"--entry-name takes RECIPE=NAME with RECIPE one of ['kd'], got {bad!r}" in capsys.readouterr().err
    for bad in ("kd=", "kd=../../escape", "kd=a/b", "kd=x=y", "kd=has space"):  # a name is one folder name
        assert twins.main(args + ["--publish", "--entry-name", bad]) == 2
        assert f"--entry-name {bad!r}: a zoo name is letters, digits" in capsys.readouterr().err
    assert twins.main(args + ["--publish", "--entry-name", "kd=a", "--entry-name", "kd=b"]) == 2
    assert "--entry-name names 'kd' twice ('a', 'b')" in capsys.readouterr().err
    assert twins.main(args + ["--publish", "--entry-name", "kd=resnet8.fmnist"]) == 2  # would replace the twin
    assert "two entries would be called 'resnet8.fmnist' (the twin's name)" in capsys.readouterr().err
    assert twins.main(args + ["--entry-name", "kd=x"]) == 2
    assert "--entry-name only applies with --publish" in capsys.readouterr().err and not dest.exists()


def test_a_results_file_is_never_overwritten_with_fewer_seeds(twins, tmp_path, capsys):
    """A new run folder beside a results file that records seeds it lacks: the table would lose them."""
    s = spec(recipes=["kd"], seeds=[0, 1], settings={"epochs": 1})
    results_dir = tmp_path / "results"
    record = protocol.write_results(s, FakeTask(), results({TWIN: [0.90, 0.901], "kd": [0.92, 0.921]}),
                                    results_dir)[0].with_suffix(".json")
    before = record.read_text()
    base = ["--teacher", "resnet56.fmnist", "--student", "resnet8", "--recipes", "kd", "--seeds", "0", "1",
            "--set", "epochs=1", "--results", str(results_dir), "--time-budget", "0"]
    assert twins.main(base + ["--out", str(tmp_path / "fresh")]) == 2
    err = capsys.readouterr().err
    assert "records seeds 0 1 that" in err and "add --restore" in err
    assert record.read_text() == before and not (tmp_path / "fresh").exists()
    assert twins.main(base + ["--out", str(tmp_path / "bad"), "--restore", "--only-seeds", "5"]) == 2
    assert not (tmp_path / "bad").exists()  # the seeds are checked before anything is restored
    # a finished restore, then --publish before every seed is done is one line, exit 2
    short = base + ["--out", str(tmp_path / "part"), "--results", str(tmp_path / "other"), "--publish"]
    assert twins.main(short) == 2  # the zoo's own resnet8-kd.fmnist is there: refused before any training
    assert "weights/resnet8-kd.fmnist exists already; nothing was published. Pass --overwrite" in capsys.readouterr().err
    assert twins.main(short + ["--overwrite"]) == 2
    assert "twins.py: error: --publish needs every seed finished (0/2 are)" in capsys.readouterr().err


def test_a_method_that_diverged_in_every_seed_is_reported_not_averaged():
    s = protocol.summarize(results({TWIN: [0.9, 0.91], "kd": [math.nan, math.nan]}), [TWIN, "kd"], 0.96)
    assert s["kd"].gain is None
    assert "**diverged in all 2 seed(s)**" in protocol.markdown(spec(recipes=["kd"]), s, 0.96, "top1")


def test_term_settings_apply_to_the_arms_that_have_the_term():
    """``cwd.student=logits`` reaches the cwd arm only (the twin and other recipes have no cwd term); a term
    setting that no arm's recipe has is refused, with the terms listed."""
    from zoo import protocol
    from zoo.segmentation.adapter import ADAPTER

    proto = ADAPTER.protocol
    settings = {"epochs": 2, "cwd.student": "logits", "pair_kd.weight": 1.0}
    assert proto.arm_settings(settings, protocol.TWIN) == {"epochs": 2}
    assert proto.arm_settings(settings, "cwd") == {"epochs": 2, "cwd.student": "logits"}
    assert proto.arm_settings(settings, "skd") == {"epochs": 2, "pair_kd.weight": 1.0}
    spec = protocol.ProtocolSpec("segmentation", "lraspp-mobilenetv2.fmnist-scenes", "lraspp-resnet8", ["pair-kd"],
                                 [0, 1], "fmnist-scenes", {"epochs": 1, "cwd.student": "logits"}, None)
    with pytest.raises(ValueError, match=r"name no term of the recipes \['pair-kd'\] \(their terms: pair_kd\)"):
        proto.validate(spec)


def test_entry_names_of_config_file_students_carry_no_colons_or_paths():
    from zoo.protocol import entry_stem

    assert entry_stem("resnet8") == "resnet8" and entry_stem("face-resnet8") == "face-resnet8"
    assert entry_stem("mmseg:kdzoo::fcn_r18_c16.py") == "mmseg-fcn-r18-c16"
    assert entry_stem("mmdet:/home/me/configs/My Detector.py") == "mmdet-my-detector"


def test_tables_name_the_teacher_by_its_card_not_its_folder():
    """A teacher given as a checkpoint folder appears in the table by its card's name (where the folder lies on
    one machine means nothing in a committed table); a task's own teacher_name wins; an unknown teacher stays."""
    from zoo import hub

    folder = str(hub.bundled_dir() / "resnet56.fmnist")
    assert protocol.teacher_label(FakeTask(), spec(teacher=folder)) == "resnet56.fmnist"
    assert protocol.teacher_label(FakeTask(), spec(teacher="no-such-teacher")) == "no-such-teacher"

    class Named(FakeTask):
        def teacher_name(self, s):
            return "a teacher"

    assert protocol.teacher_label(Named(), spec(teacher=folder)) == "a teacher"


def test_a_seed_another_live_process_trains_is_skipped_and_a_stale_lock_taken_over(tmp_path, capsys):
    """Two identical commands on one run folder trained the same arms into the same files; now a seed folder
    holds training.lock (the pid) while a process trains it."""
    task = FakeTask()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "seed-0").mkdir()
        (tmp_path / "seed-0" / protocol.LOCK_FILE).write_text(f"{other.pid}\n")
        done = protocol.run(spec(seeds=[0, 1]), task, tmp_path)
        assert task.calls == [1] and [r.seed for r in done] == [1]
        assert f"seed-0: process {other.pid} is training it" in capsys.readouterr().out
    finally:
        other.kill()
        other.wait()
    done = protocol.run(spec(seeds=[0, 1]), task, tmp_path)  # its process has ended: the lock is taken over
    assert task.calls == [1, 0] and [r.seed for r in done] == [0, 1]
    assert not (tmp_path / "seed-0" / protocol.LOCK_FILE).exists()  # released after training


def test_epoch_table_means_each_evaluated_epoch_over_seeds():
    def hist(*values):
        return [{"epoch": 3 * (i + 1), "step": 10 * (i + 1), "top1": v} for i, v in enumerate(values)]

    results = [SeedResult(0, {TWIN: 0.5, "kd": 0.7}, 20, 1.0, "cpu", {TWIN: hist(0.2, 0.5), "kd": hist(0.4, 0.7)}),
               SeedResult(1, {TWIN: 0.6, "kd": 0.8}, 20, 1.0, "cpu", {TWIN: hist(0.3, 0.6), "kd": hist(0.5)})]
    table = protocol.epoch_table(results, [TWIN, "kd"], "top1")
    assert "| arm | 3 | 6 |" in table
    assert "| twin | 25.0 | 55.0 |" in table and "| kd | 45.0 | 70.0 (1) |" in table  # kd's seed 1 stopped early
    one_point = [SeedResult(0, {TWIN: 0.5}, 20, 1.0, "cpu", {TWIN: hist(0.5)})]
    assert protocol.epoch_table(one_point, [TWIN], "top1") == ""  # evaluated once: nothing to show


def test_twins_cli_says_what_to_run_next_and_stops_cleanly_on_ctrl_c(twins, tmp_path, capsys, monkeypatch):
    """--only-seeds that finished its seeds names the seeds left (not "the same command again"); Ctrl-C is one
    line and exit 130, not a traceback."""
    args = ["--teacher", "resnet56.fmnist", "--student", "resnet8", "--recipes", "kd", "--seeds", "0", "1", "2",
            "--set", "epochs=1", "--out", str(tmp_path / "run"), "--results", str(tmp_path / "results")]
    done = results({TWIN: [0.90], "kd": [0.92]})  # seed 0 only
    monkeypatch.setattr(protocol, "run", lambda *a, **k: done)
    assert twins.main(args + ["--only-seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "1/3 seeds done" in out and "seed(s) 1 2 are not done: train them with --only-seeds 1 2" in out
    assert "same command again" not in out
    assert twins.main(args + ["--only-seeds", "0", "1"]) == 0  # seed 1 was cut short: the same command resumes it
    assert "run the same command again to continue" in capsys.readouterr().out
    assert twins.main(args) == 0
    assert "run the same command again to continue" in capsys.readouterr().out

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocol, "run", interrupted)
    assert twins.main(args) == 130
    captured = capsys.readouterr()
    assert "twins.py: interrupted" in captured.err and "run the same command again to resume" in captured.err
    assert "Traceback" not in captured.err


def test_classification_term_settings_reach_only_the_arms_that_have_the_term():
    """``--set kd.T=4`` in a classification protocol goes to the kd arm (the pack's member settings), not to
    the twin's training settings; a term setting that no recipe has is refused, with the terms listed."""
    from zoo.classification import protocol as cls_protocol

    s = spec(recipes=["kd", "at"], settings={"epochs": 1, "kd.T": 4.0, "at.weight": 500.0}, train_subset=256)
    cls_protocol.ClassificationProtocol().validate(s)
    members = {m.name: m for m in cls_protocol._members(s)}
    assert members[TWIN].settings == {} and members["kd"].settings == {"kd.T": 4.0}
    assert members["at"].settings == {"at.weight": 500.0}
    assert cls_protocol._config(s, 0).epochs == 1
    bad = spec(recipes=["at"], settings={"epochs": 1, "kd.T": 4.0}, train_subset=256)
    with pytest.raises(ValueError, match=r"name no term of the recipes \['at'\] \(their terms: at\)"):
        cls_protocol.ClassificationProtocol().validate(bad)


def test_an_interrupted_classification_seed_keeps_its_training_time(tmp_path, monkeypatch):
    """Ctrl-C inside a seed's pack still adds the time spent to ``wall_seconds.json`` (the table's wall time)."""
    import time as time_

    from zoo.classification import protocol as cls_protocol

    def interrupted(*a, **k):
        time_.sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(cls_protocol, "distill_pack", interrupted)
    s = spec(recipes=["kd"], settings={"epochs": 1}, train_subset=256)
    (tmp_path / "wall_seconds.json").write_text('{"seconds": 10.0}\n')
    with pytest.raises(KeyboardInterrupt):
        cls_protocol.ClassificationProtocol().run_seed(s, 0, tmp_path, None, "cpu")
    assert json.loads((tmp_path / "wall_seconds.json").read_text())["seconds"] >= 10.3
