"""`zoo export --onnx`: every task exports and matches onnxruntime on its sample inputs (detectors one image at a
time, their detections matched); fp16 and int8 variants; what cannot be exported says why and writes nothing."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import zoo  # noqa: E402
from zoo.cli import main  # noqa: E402
from zoo.export import export_onnx  # noqa: E402


def test_a_classifier_exports_in_fp32_fp16_and_int8_with_a_dynamic_batch(tmp_path):
    import onnxruntime as ort

    r = export_onnx("resnet8-kd.fmnist", tmp_path / "m.onnx")
    assert r["max_abs_diff"] <= r["tolerance"] and r["inputs"] == {"images": [10, 1, 28, 28]}
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 28, 28)  # another batch size than the export's
    out = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - zoo.load("resnet8-kd.fmnist")(x).numpy()).max() < 1e-3
    half = export_onnx("resnet8-kd.fmnist", tmp_path / "h.onnx", dtype="fp16")
    assert half["bytes"] < 0.7 * r["bytes"] and half["max_abs_diff"] <= half["tolerance"]
    q = export_onnx("resnet8-kd.fmnist", tmp_path / "q.onnx", int8=True)
    assert q["bytes"] < 0.5 * r["bytes"] and q["tolerance"] is None
    for name in ("m", "h", "q"):  # a stable output name to fetch by (it was the exporter's 'linear_...')
        assert [o.name for o in ort.InferenceSession(str(tmp_path / f"{name}.onnx"),
                                                     providers=["CPUExecutionProvider"]).get_outputs()] == ["output"]
    assert r["outputs"] == ["output"]


def test_other_tasks_and_what_cannot_be_exported(tmp_path, capsys):
    gan = export_onnx("cyclegan-vintagify", tmp_path / "g.onnx",
                      inputs=[np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)])
    assert gan["inputs"] == {"images": [1, 3, 40, 40]} and gan["max_abs_diff"] <= gan["tolerance"]
    assert gan["dynamic"] == {"images": ["batch"]}  # one sample input, and still any batch
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.random.default_rng(2).random((2, 3, 40, 40), dtype=np.float32) * 2 - 1})[0].shape \
        == (2, 3, 40, 40)
    seg = export_onnx("lraspp-resnet8-cwd+pixel.fmnist-scenes", tmp_path / "s.onnx")
    assert seg["inputs"]["images"][1:] == [3, 96, 96] and seg["dynamic"] == {"images": ["batch"]}
    assert seg["max_abs_diff"] <= seg["tolerance"]
    rng = np.random.default_rng(1)
    with pytest.raises(NotImplementedError, match=r"cyclegan-vintagify \(gan\).*varying size"):
        export_onnx("cyclegan-vintagify", tmp_path / "v.onnx",
                    inputs=[rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)])
    assert not (tmp_path / "v.onnx").exists()
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_onnx("resnet8-kd.fmnist", tmp_path / "x.onnx", dtype="bf16")
    with pytest.raises(ValueError, match="do not combine"):
        export_onnx("resnet8-kd.fmnist", tmp_path / "x.onnx", dtype="fp16", int8=True)
    assert main(["export", "resnet8-kd.fmnist", "--onnx", str(tmp_path / "c.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "fp32"



def test_a_detector_exports_one_image_at_a_time_and_its_detections_match(tmp_path):
    """The bundled Faster R-CNN student (96-pixel scenes): every detection of PyTorch is matched by one of
    onnxruntime (same label, IoU >= 0.5, same count), boxes within 1e-4 x the largest coordinate and scores
    within 1e-4; the graph takes an image of another size too; fp16 within 1e-2; int8 reports, unbounded."""
    from zoo.detection.export import DetectorGraph, compare_detections
    from zoo.export import _session, run_session

    name = "frcnn-resnet20.fmnist-scenes"
    r = export_onnx(name, tmp_path / "d.onnx")
    d = r["detections"]
    assert r["inputs"] == {"image": [3, 96, 96]} and r["dynamic"]["image"] == ["height", "width"]
    assert r["outputs"] == ["boxes", "scores", "labels"]  # (the detection export did not report them)
    assert r["exporter"].startswith("torchscript") and d["images"] == 4
    assert d["pytorch"] == d["onnx"] == d["matched"] > 0 and d["images_differing"] == 0
    assert d["max_box_diff"] <= d["box_tolerance"] and d["max_score_diff"] <= d["score_tolerance"] == 1e-4
    model = zoo.load(name)
    session = _session(str(tmp_path / "d.onnx"))
    scene = model.preprocess(zoo.tasks.get_adapter("detection").sample_inputs(model.card)[:1])[0]
    others = [torch.nn.functional.interpolate(scene[None], size=(80, 120), mode="bilinear")[0], torch.zeros(3, 96, 96)]
    with torch.no_grad():
        reference = [DetectorGraph(model)(x) for x in others]
    stats = compare_detections(reference, [run_session(session, {"image": x}) for x in others])
    assert stats["pytorch"] > 0 and stats["images_differing"] == 0 and stats["max_box_diff"] < 1e-2
    assert len(reference[1][0]) == 0  # a blank image: no detections on either side
    half = export_onnx(name, tmp_path / "h.onnx", dtype="fp16")
    assert half["detections"]["images_differing"] == 0 and half["max_abs_diff"] <= half["tolerance"]
    assert half["bytes"] < 0.6 * r["bytes"]
    q = export_onnx(model, tmp_path / "q.onnx", int8=True)
    assert q["tolerance"] is None and q["detections"]["matched"] > 0 and q["bytes"] < 0.5 * r["bytes"]


def test_bad_export_requests_name_the_entry_and_the_reason(tmp_path, capsys, monkeypatch):
    """Unknown dtype, a destination that cannot be written, an exporter failure: each says which entry and
    why, before any file appears; the command line exits 2 with the message."""
    name = "resnet8-kd.fmnist"
    with pytest.raises(ValueError, match=rf"{name}: dtype must be one of fp32, fp16, got 'int4'"):
        export_onnx(name, tmp_path / "x.onnx", dtype="int4")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=rf"{name}: cannot write the ONNX file .*is a file, not a folder"):
        export_onnx(name, blocker / "sub" / "m.onnx")
    with pytest.raises(IsADirectoryError, match=rf"{name}: cannot write the ONNX file .*it is a folder"):
        export_onnx(name, tmp_path)
    assert main(["export", name, "--onnx", str(blocker / "m.onnx")]) == 2
    assert "resnet8-kd.fmnist: cannot write the ONNX file" in capsys.readouterr().err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=rf"{name}: cannot write the ONNX file .*not a regular file"):
        export_onnx(name, fifo)  # the atomic rename used to put a regular file in the FIFO's place
    fifo.unlink()
    (tmp_path / "gone").symlink_to(tmp_path / "missing")  # found only after the whole export and check
    with pytest.raises(NotADirectoryError, match=rf"{name}: cannot write the ONNX file .*gone is a symbolic link"):
        export_onnx(name, tmp_path / "gone" / "m.onnx")
    (tmp_path / "gone").unlink()
    with pytest.raises(TypeError, match="int8 must be True or False, got str 'no'"):
        export_onnx(name, tmp_path / "x.onnx", int8="no")  # was: quantised anyway
    with pytest.raises(TypeError, match="tolerance must be a number, got str"):
        export_onnx(name, tmp_path / "x.onnx", tolerance="1e-3")
    with pytest.raises(ValueError, match="tolerance must be a positive finite number, got inf"):
        export_onnx(name, tmp_path / "x.onnx", tolerance=float("inf"))

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo\nmore detail")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(NotImplementedError, match=rf"{name} \(classification\): torch .*'s dynamo .*exporter failed: "
                                                  "RuntimeError: Unsupported: ONNX export of operator foo$"):
        export_onnx(name, tmp_path / "y.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    """export_onnx works on a copy: a model in half precision and train mode keeps both (it used to come back
    float32 and in eval mode)."""
    import zoo

    model = zoo.load("resnet8-kd.fmnist").half().train()
    export_onnx(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert model.training and next(model.parameters()).dtype == torch.float16


def test_export_takes_a_wrapped_model_refuses_a_card_less_one_and_exports_one_that_cannot_be_copied(tmp_path):
    """Found by a breaker pass: DataParallel and card-less modules were AttributeErrors, and a model with
    torch.nn.utils.weight_norm failed in deepcopy."""
    import zoo

    wrapped = torch.nn.DataParallel(zoo.load("resnet8-kd.fmnist"))
    assert export_onnx(wrapped, tmp_path / "w.onnx")["outputs"] == ["output"]
    with pytest.raises(ValueError, match="needs a kdzoo model .* got a Linear without a card"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    model = zoo.load("resnet8-kd.fmnist").train()
    with pytest.warns(FutureWarning):
        torch.nn.utils.weight_norm(model.fc)
    r = export_onnx(model, tmp_path / "n.onnx")
    assert r["max_abs_diff"] <= r["tolerance"] and model.training and model.fc.training
    model.to(torch.bfloat16)(torch.zeros(1, 1, 28, 28, dtype=torch.bfloat16))  # a forward with autograd: not copyable
    with pytest.raises(ValueError, match="cannot be copied .* and is not float32"):
        export_onnx(model, tmp_path / "h.onnx")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "h.onnx").exists()


def test_a_face_recogniser_exports_its_embedding_and_verifies_the_same_pairs(tmp_path):
    """The published ProxylessKD student: onnxruntime's embeddings (another batch size than the export's)
    match PyTorch's and are unit vectors, and the same/different decision at the card's threshold is the
    same for every pair; fp16 stays within its tolerance."""
    import onnxruntime as ort

    name = "face-resnet8-proxyless-kd.cjk-fonts"
    r = export_onnx(name, tmp_path / "f.onnx")
    assert r["max_abs_diff"] <= r["tolerance"] and r["dynamic"] == {"images": ["batch"]}
    model = zoo.load(name)
    x = torch.rand(5, *r["inputs"]["images"][1:], generator=torch.Generator().manual_seed(0))
    out = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    threshold = model.card.metrics["threshold"]
    assert np.array_equal(out @ out.T >= threshold, ref @ ref.T >= threshold)
    half = export_onnx(name, tmp_path / "h.onnx", dtype="fp16")
    assert half["max_abs_diff"] <= half["tolerance"] and half["bytes"] < 0.7 * r["bytes"]


@pytest.mark.slow
def test_the_text_model_exports_with_its_two_inputs(tmp_path):
    import onnxruntime as ort

    r = export_onnx("tinybert-kd", tmp_path / "t.onnx")
    assert set(r["inputs"]) == {"input_ids", "attention_mask"} and r["max_abs_diff"] <= r["tolerance"]
    model = zoo.load("tinybert-kd")
    batch = model.preprocess(["a cat", "a much longer text about a small domesticated carnivore kept as a pet"])
    session = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {k: v.numpy() for k, v in batch.items()})[0]  # another length than the export's
    with torch.no_grad():
        assert np.abs(out - model(**batch).numpy()).max() < 1e-3


def test_the_export_benchmark_measures_every_variant_beside_pytorch(tmp_path, monkeypatch):
    """benchmarks/export_bench.py on a small classification slice: four rows (eager, fp32, fp16, int8), each
    with latency, its ratio to eager and the metric on the same slice; markdown and JSON written."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "export_bench.py"
    spec = importlib.util.spec_from_file_location("export_bench", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "export_bench", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    assert bench.main(["--tasks", "classification", "nlp", "--slice", "classification=50", "--rounds", "1",
                       "--per-round", "1", "--budget", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "export-cpu.json").read_text())
    rows = report["rows"]
    assert [r["variant"] for r in rows] == ["pytorch", "fp32", "fp16", "int8"]
    assert all(r["latency_ms"] > 0 and r["calls"] == 1 and "top1" in r["metrics"] for r in rows)
    assert rows[0]["latency_vs_pytorch"] == 1.0 and rows[1]["metric_change"] == 0.0
    assert rows[1]["metrics"]["top1_agreement"] == 1.0 and rows[3]["parity"]["tolerance"] is None
    assert "nlp" in report["skipped"] and "first 50 fashion-mnist test images" in report["slices"]["classification"]
    assert "| classification | `resnet8-kd.fmnist` | int8 |" in (tmp_path / "export-cpu.md").read_text()


def test_export_takes_the_users_sample_inputs(tmp_path, capsys):
    """--input: the files to export and check with (an entry whose data set has no bundled samples needs them)."""
    import json

    from PIL import Image


    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((28, 28)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    assert main(["export", "resnet8-kd.fmnist", "--onnx", str(tmp_path / "m.onnx"), "--input",
                 str(tmp_path / "0.png"), str(tmp_path / "1.png"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inputs"] == {"images": [2, 1, 28, 28]} and out["max_abs_diff"] <= out["tolerance"]
