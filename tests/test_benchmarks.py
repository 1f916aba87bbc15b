"""benchmarks/kd_epoch_gpu.py runs through the real trainer and writes what it measured (CPU, tiny sizes)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kd_epoch_gpu", ROOT / "benchmarks" / "kd_epoch_gpu.py")
kd_epoch_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kd_epoch_gpu)


def test_kd_epoch_benchmark_times_every_mode_and_names_the_device(tmp_path):
    args = ["--steps", "3", "--warmup", "1", "--rounds", "1", "--pack", "2", "--compile", "off",
            "--train-subset", "256", "--batch-size", "32", "--out", str(tmp_path)]
    assert kd_epoch_gpu.main(args) == 0
    result = json.loads((tmp_path / "kd_epoch-cpu.json").read_text())
    names = [row[0] for row in result["rows"]]
    assert names == ["eager (1 student)", "eager (1 student), NaN check every step",
                     "packed (2 students, one teacher forward)"]
    assert all(ms > 0 and seconds > 0 for _, ms, seconds, _ in result["rows"])
    eager_ms, packed_ms = result["rows"][0][1], result["rows"][2][1]
    # per student-epoch = ms/step x steps per 50k images / students in the step
    assert abs(result["rows"][2][2] - packed_ms / 1000 * 50_000 / 32 / 2) < 1e-6
    assert eager_ms != packed_ms
    assert result["device"].startswith("CPU") and "n/a (GPU only)" in (tmp_path / "kd_epoch-cpu.md").read_text()


def test_a_run_cut_short_keeps_the_modes_it_timed(tmp_path, monkeypatch):
    real, calls = kd_epoch_gpu.time_mode, []

    def dies_on_the_third_mode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a lease's end would
        return real(*args, **kwargs)

    monkeypatch.setattr(kd_epoch_gpu, "time_mode", dies_on_the_third_mode)
    args = ["--steps", "2", "--warmup", "1", "--rounds", "1", "--pack", "2", "--compile", "off",
            "--train-subset", "128", "--batch-size", "32", "--out", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        kd_epoch_gpu.main(args)
    rows = json.loads((tmp_path / "kd_epoch-cpu.json").read_text())["rows"]
    assert [r[0] for r in rows] == ["eager (1 student)", "eager (1 student), NaN check every step"]


def test_readme_shows_the_recorded_kd_epoch_run():
    recorded = (ROOT / "benchmarks" / "results" / "kd_epoch-cpu.md").read_text().strip()
    assert recorded in (ROOT / "README.md").read_text()
    rows = json.loads((ROOT / "benchmarks" / "results" / "kd_epoch-cpu.json").read_text())["rows"]
    assert len(rows) == 5 and all(f"| {name} | {ms:.1f} |" in recorded for name, ms, _, _ in rows)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_teacher_strength_matches_the_table_run_and_resumes(tmp_path):
    teacher_strength = _load("teacher_strength")
    train = {**json.loads((ROOT / "benchmarks" / "results" / "table1-fmnist.json").read_text())["config"]["train"],
             "epochs": 1, "batch_size": 64}
    table = {"config": {"dataset": "fashion-mnist", "seeds": [0, 1], "train_subset": 128, "test_subset": 100,
                        "train": train},
             "settings_line": "tiny", "jobs": [
                 {"seed": s, "top1": {"resnet56": [0.5], "resnet20": [0.4 + s / 10], "kd": [0.45]}} for s in (0, 1)]}
    (tmp_path / "table.json").write_text(json.dumps(table))
    args = ["--out", str(tmp_path / "run"), "--table", str(tmp_path / "table.json"), "--methods", "kd"]
    assert teacher_strength.main(args + ["--time-budget", "0"]) == 0  # stops in seed 0's job
    assert not (tmp_path / "run" / "jobs" / "strong-teacher-s0" / "result.json").exists()
    assert teacher_strength.main(args) == 0
    result = json.loads((tmp_path / "run" / "teacher-strength.json").read_text())
    assert [j["seed"] for j in result["jobs"]] == [0, 1] and result["teacher"].startswith("resnet56.fmnist (94.39%)")
    assert set(result["jobs"][0]["top1"]) == {"resnet20", "kd"}
    md = (tmp_path / "run" / "teacher-strength.md").read_text()
    assert "| kd |" in md and "45.00 ± 0.00 (2)" in md and "| resnet20 |" in md and "45.00 ± 7.07 (2)" in md
    with pytest.raises(SystemExit, match="other settings"):
        teacher_strength.main(args[:-1] + ["at"])


def test_published_teacher_strength_run_matches_the_table_and_the_readme():
    results = ROOT / "benchmarks" / "results"
    strong = json.loads((results / "teacher-strength.json").read_text())
    table = json.loads((results / "table1-fmnist.json").read_text())
    plain = {r["seed"]: r["top1"]["resnet20"][0] for r in table["jobs"] if "resnet20" in r["top1"]}
    # the plain ResNet-20 packed beside the strong teacher's students is the table's, bit for bit
    assert sorted(j["seed"] for j in strong["jobs"]) == sorted(plain)
    assert all(j["top1"]["resnet20"][0] == plain[j["seed"]] for j in strong["jobs"])
    assert all(strong["settings"]["train"][k] == v for k, v in table["config"]["train"].items())
    md = (results / "teacher-strength.md").read_text()
    assert md[:md.index("\n\nThe table's own teacher")] in (ROOT / "README.md").read_text()
