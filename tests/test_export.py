"""`zoo export --onnx`: every task whose inputs ONNX can take exports and matches onnxruntime on its sample inputs;
fp16 and int8 variants; what cannot be exported says why and writes nothing."""
import json

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


def test_other_tasks_and_what_cannot_be_exported(tmp_path, capsys):
    gan = export_onnx("cyclegan-vintagify", tmp_path / "g.onnx",
                      inputs=[np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)])
    assert gan["inputs"] == {"images": [1, 3, 40, 40]} and gan["max_abs_diff"] <= gan["tolerance"]
    with pytest.raises(NotImplementedError, match="detection.*lists of varying size"):
        export_onnx("frcnn-resnet20.fmnist-scenes", tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_onnx("resnet8-kd.fmnist", tmp_path / "x.onnx", dtype="bf16")
    with pytest.raises(ValueError, match="do not combine"):
        export_onnx("resnet8-kd.fmnist", tmp_path / "x.onnx", dtype="fp16", int8=True)
    assert main(["export", "resnet8-kd.fmnist", "--onnx", str(tmp_path / "c.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "fp32"


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
