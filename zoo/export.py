"""Deployment export: a zoo entry as an ONNX file, checked against onnxruntime on its sample inputs.

    zoo export NAME --onnx FILE [--dtype fp32|fp16] [--int8] [--tolerance T]

The model is exported with torch's ONNX exporter (``torch.onnx.export``, the ``torch.export``-based one), the
batch dimension dynamic (and the sequence length of token inputs). The ONNX inputs are what the entry's
preprocessor makes (``model.preprocess``): classification images normalised with the card's mean and std,
segmentation, face and detection images as pixels / 255, gan images as pixels / 127.5 - 1, text as the
tokenizer's ``input_ids`` and ``attention_mask``. The export is accepted only if onnxruntime reproduces the PyTorch outputs on the
entry's sample inputs within the tolerance: max |difference| <= ``tolerance`` x max(1, max |PyTorch output|)
(defaults 1e-4 for fp32, 1e-2 for fp16; int8 reports the difference without a bound, since dynamic
quantisation changes the numbers by design). ``--dtype fp16`` converts the weights and activations with
onnxruntime's float16 converter; ``--int8`` applies onnxruntime's dynamic int8 quantisation of the weights.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def example_inputs(model: nn.Module, inputs: Any = None) -> dict[str, torch.Tensor]:
    """Named input tensors for ``model``: its preprocessor applied to ``inputs`` (default: the task's sample
    inputs). A tensor becomes ``{"images": ...}``; a dict of tensors (e.g. a tokenizer's) stays as it is; a list
    of equal-shape images is stacked.

    Raises:
        NotImplementedError: the task's inputs are not tensors ONNX can take (e.g. a detector's list of
            images of any size); the task is named.
    """
    from .tasks import get_adapter

    card = model.card
    if inputs is None:
        inputs = get_adapter(card.task).sample_inputs(card)
    batch = model.preprocess(list(inputs) if isinstance(inputs, (list, tuple)) else inputs)
    if isinstance(batch, torch.Tensor):
        return {"images": batch}
    if isinstance(batch, dict) and all(isinstance(v, torch.Tensor) for v in batch.values()):
        return dict(batch)
    if isinstance(batch, list) and batch and all(isinstance(b, torch.Tensor) and b.dim() == 4 for b in batch) \
            and len({tuple(b.shape[1:]) for b in batch}) == 1:
        return {"images": torch.cat(batch)}
    raise NotImplementedError(f"{card.name} ({card.task}): its inputs are {type(batch).__name__}s of varying size, "
                              "which this exporter cannot give ONNX a fixed signature for")


def _run_onnx(blob: bytes, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    types = {i.name: i.type for i in session.get_inputs()}
    arrays = {}
    for n in names:
        a = feeds[n].numpy()
        arrays[n] = a.astype(np.float16) if types[n] == "tensor(float16)" else a
    return session.run(None, arrays)


def export_onnx(model: nn.Module | str, path: str | os.PathLike, *, dtype: str = "fp32", int8: bool = False,
                inputs: Any = None, tolerance: float | None = None) -> dict[str, Any]:
    """Write ``model`` (a zoo name, folder or loaded model) to ``path`` as ONNX and check it with onnxruntime.

    Returns ``{"path", "dtype", "int8", "max_abs_diff", "tolerance", "inputs": {name: shape}, "bytes"}``.

    Raises:
        ValueError: an unknown dtype, or onnxruntime's outputs further from PyTorch's than the tolerance
            (nothing is written then).
        NotImplementedError: the task's inputs cannot be exported (see `example_inputs`).
    """
    import zoo
    from .io import atomic_write_bytes

    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be one of {', '.join(TOLERANCE)}, got {dtype!r}")
    if int8 and dtype != "fp32":
        raise ValueError("int8 quantises an fp32 model's weights; --int8 and --dtype fp16 do not combine: choose one")
    if not isinstance(model, nn.Module):
        model = zoo.load(model)
    model = model.float().eval()
    feeds = example_inputs(model, inputs)
    names = list(feeds)
    with torch.no_grad():
        reference = model(**feeds) if len(names) > 1 else model(feeds[names[0]])
    reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    batch = torch.export.Dim("batch", min=1)
    # the batch is dynamic; so is the length of token sequences (2-D integer inputs such as input_ids)
    length = torch.export.Dim("length", min=2)
    dynamic = {n: ({0: batch, 1: length} if t.dim() == 2 and not t.is_floating_point() else {0: batch})
               for n, t in feeds.items()} if len(feeds[names[0]]) > 1 else None
    buf = io.BytesIO()
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # the exporter reports its steps on stdout; keep stdout for results
        if len(names) > 1:
            torch.onnx.export(model, (), buf, kwargs=feeds, input_names=names, dynamic_shapes=dynamic, dynamo=True,
                              verbose=False)
        else:
            torch.onnx.export(model, (feeds[names[0]],), buf, input_names=names,
                              dynamic_shapes=(dynamic[names[0]],) if dynamic else None, dynamo=True, verbose=False)
    blob = buf.getvalue()
    if dtype == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        blob = convert_float_to_float16(onnx.load_from_string(blob), keep_io_types=True).SerializeToString()
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        import onnx

        graph = onnx.load_from_string(blob)
        del graph.graph.value_info[:]  # the exporter's traced shapes; the quantiser infers its own
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "in.onnx").write_bytes(graph.SerializeToString())
            quantize_dynamic(str(Path(tmp) / "in.onnx"), str(Path(tmp) / "out.onnx"), weight_type=QuantType.QInt8)
            blob = (Path(tmp) / "out.onnx").read_bytes()
    outputs = _run_onnx(blob, feeds)
    diff = max(float(np.abs(o.astype(np.float32) - r.float().numpy()).max()) for o, r in zip(outputs, reference))
    scale = max(1.0, max(float(r.abs().max()) for r in reference))
    bound = None if int8 else (TOLERANCE[dtype] if tolerance is None else tolerance) * scale
    if bound is not None and diff > bound:
        raise ValueError(f"{model.card.name}: onnxruntime differs from PyTorch by {diff:.3g} (> {bound:.3g}) on the sample "
                         "inputs; the ONNX file was not written")
    atomic_write_bytes(Path(path), blob)
    return {"path": str(path), "dtype": dtype, "int8": int8, "max_abs_diff": diff, "tolerance": bound,
            "inputs": {n: list(t.shape) for n, t in feeds.items()}, "bytes": len(blob)}
