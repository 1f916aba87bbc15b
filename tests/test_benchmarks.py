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
    assert abs(result["rows"][0][2] - eager_ms / 1000 * 50_000 / 32 / 1) < 1e-6
    assert abs(result["rows"][2][2] - packed_ms / 1000 * 50_000 / 32 / 2) < 1e-6
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



def test_amp_benchmark_times_both_dtypes_from_one_start_and_checks_the_loss(tmp_path, capsys):
    """benchmarks/amp_cpu.py: fp32 and bf16 steps of the same model from the same weights and batch; the
    bf16 loss after a round stays near fp32's (bf16 keeps 8 bits of mantissa, the weights stay fp32)."""
    amp_spec = importlib.util.spec_from_file_location("amp_cpu", ROOT / "benchmarks" / "amp_cpu.py")
    amp_cpu = importlib.util.module_from_spec(amp_spec)
    amp_spec.loader.exec_module(amp_cpu)
    assert amp_cpu.main(["--steps", "1", "--rounds", "1", "--only", "TinyBERT", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "amp-cpu.json").read_text())
    [row] = record["rows"]
    assert row["case"].startswith("nlp: TinyBERT-4L-312") and record["hardware"].startswith("CPU: ")
    assert row["fp32_ms_min"] > 0 and row["bf16_ms_min"] > 0
    assert abs(row["speedup"] - row["fp32_ms_min"] / row["bf16_ms_min"]) < 0.02  # the ratio of the minima
    assert row["loss_rel_diff"] < 0.05 and row["loss_fp32"] != row["loss_bf16"]  # bf16 really ran
    assert "| nlp: TinyBERT-4L-312" in (tmp_path / "amp-cpu.md").read_text()
    (tmp_path / "file").write_text("x")
    for bad, message in ((["--only", "nothing", "--out", str(tmp_path)], "matches no case"),
                         (["--only", "TinyBERT"], "--only writes a table of some cases: give --out"),
                         (["--out", str(tmp_path / "file")], "is a file, not a folder")):
        with pytest.raises(SystemExit):
            amp_cpu.main(bad)
        assert message in capsys.readouterr().err
