"""Deployment export: a zoo entry as an ONNX file, checked against onnxruntime on its sample inputs.

    zoo export NAME --onnx FILE [--dtype fp32|fp16] [--int8] [--tolerance T]

Classification, segmentation, gan, face and text models are exported with torch's ``torch.export``-based
ONNX exporter (``torch.onnx.export(..., dynamo=True)``), the batch dimension dynamic (and the sequence length
of token inputs). The ONNX inputs are what the entry's preprocessor makes (``model.preprocess``):
classification images normalised with the card's mean and std, segmentation and face images as pixels / 255,
gan images as pixels / 127.5 - 1, text as the tokenizer's ``input_ids`` and ``attention_mask``. The export is
accepted only if onnxruntime reproduces the PyTorch outputs on the entry's sample inputs within the tolerance:
max |difference| <= ``tolerance`` x max(1, max |PyTorch output|) (defaults 1e-4 for fp32, 1e-2 for fp16; int8
reports the difference without a bound, since dynamic quantisation changes the numbers by design).

A task may export its models its own way through its adapter's ``onnx_export`` hook (the detection
task's torchvision detectors: one image at a time, with their boxes matched; see its ``export`` module).

``--dtype fp16`` converts the weights and activations with onnxruntime's float16 converter (inputs and
outputs stay float32); ``keep_fp32`` lets a task keep parts of its graph in fp32.
``--int8`` applies onnxruntime's dynamic int8 quantisation of the weights (``quantize_dynamic``).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import io
import logging
import math
import numbers
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


def _label(model: Any) -> str:
    """The entry's name for messages: the name given, or a loaded model's card name."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    card = getattr(model, "card", None)
    return getattr(card, "name", None) or type(model).__name__


def example_inputs(model: nn.Module, inputs: Any = None) -> dict[str, torch.Tensor]:
    """Named input tensors for ``model``: its preprocessor applied to ``inputs`` (default: the task's sample
    inputs). A tensor becomes ``{"images": ...}``; a dict of tensors (e.g. a tokenizer's) stays as it is; a list
    of equal-shape images is stacked.

    Raises:
        NotImplementedError: the task's inputs are not tensors ONNX can take as one batch (a list of images
            of varying size from a model that is not a torchvision detector); the task is named.
    """
    batch = _preprocessed(model, inputs)
    if isinstance(batch, torch.Tensor):
        return {"images": batch}
    if isinstance(batch, dict) and all(isinstance(v, torch.Tensor) for v in batch.values()):
        return dict(batch)
    if isinstance(batch, list) and batch and all(isinstance(b, torch.Tensor) and b.dim() == 4 for b in batch) \
            and len({tuple(b.shape[1:]) for b in batch}) == 1:
        return {"images": torch.cat(batch)}
    card = model.card
    raise NotImplementedError(f"{card.name} ({card.task}): its inputs are {type(batch).__name__}s of varying size, "
                              "which this exporter cannot give ONNX a fixed signature for (only torchvision "
                              "detectors are exported one image at a time)")


def _preprocessed(model: nn.Module, inputs: Any) -> Any:
    from .tasks import get_adapter

    if inputs is None:
        inputs = get_adapter(model.card.task).sample_inputs(model.card)
    return model.preprocess(list(inputs) if isinstance(inputs, (list, tuple)) else inputs)


def _session(blob: bytes | str, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on an ONNX model (bytes or a path); ``threads`` fixes its intra- and
    inter-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def run_session(session: Any, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """``session``'s outputs on ``feeds`` (tensors by input name), cast to a float16 input where the graph
    asks for one."""
    arrays = {}
    for i in session.get_inputs():
        a = feeds[i.name].detach().cpu().numpy()
        arrays[i.name] = a.astype(np.float16) if i.type == "tensor(float16)" else a
    return session.run(None, arrays)


def _run_onnx(blob: bytes, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return run_session(_session(blob), feeds)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters' step reports go to stderr (stdout is for results), their tracer and deprecation
    warnings are dropped, and the quantiser's root-logger warnings about tensors it skips are held back."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _check_destination(path: Path, name: str) -> None:
    """Raise before any work when ``path`` cannot be written; the message names the entry and the reason.

    Raises:
        OSError: ``path`` is a folder or another non-regular file, a loop of links, sits below a file or a dangling
            link, or its nearest existing folder is not writable.
    """
    from .io import check_link_path

    try:
        check_link_path(path)
    except ValueError as e:
        raise NotADirectoryError(f"{name}: cannot write the ONNX file {path}: {e}") from None
    if path.is_dir():
        raise IsADirectoryError(f"{name}: cannot write the ONNX file {path}: it is a folder")
    if path.exists() and not path.is_file():  # a FIFO or a device: the atomic rename would replace it
        raise OSError(f"{name}: cannot write the ONNX file {path}: it is not a regular file (a FIFO, socket or device)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{name}: cannot write the ONNX file {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}: cannot write the ONNX file {path}: the folder {parent} is not writable")


def _drop_repeated_nodes(graph: Any) -> None:
    """Remove nodes identical to an earlier one (same op, inputs, outputs, name and attributes). onnxruntime's
    float16 converter inserts the same Cast twice when a tensor feeds two fp32 nodes, which makes the graph
    invalid (one output, two producers); the copy computes nothing new."""
    seen, kept = set(), []
    for node in graph.node:
        key = node.SerializeToString()
        if key not in seen:
            seen.add(key)
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _subgraph_inputs(node: Any) -> set[str]:
    """Every tensor name a node reads, including those its subgraphs (If, Loop branches) read from outside."""
    names = set(node.input)
    for attribute in node.attribute:
        for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            for inner in graph.node:
                names |= _subgraph_inputs(inner)
    return names


def to_fp16(blob: bytes, keep_fp32: Callable[[Any], bool] | None = None) -> bytes:
    """``blob`` with its float weights and activations converted to float16 by onnxruntime's converter, the
    graph's inputs and outputs kept float32.

    ``keep_fp32(node)`` marks nodes to leave in float32. Tensors that flow only between such nodes (or into
    their If/Loop branches) are not declared to the converter, so they stay float32 rather than being
    narrowed to float16 between two float32 nodes; casts are inserted where fp16 and fp32 nodes meet."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = onnx.load_from_string(blob)
    if keep_fp32 is None:
        converted = convert_float_to_float16(graph, keep_io_types=True)
    else:
        graph = onnx.shape_inference.infer_shapes(graph)
        kept = {n.name for n in graph.graph.node if keep_fp32(n)}
        producer = {o: n.name for n in graph.graph.node for o in n.output}
        readers: dict[str, set[str]] = collections.defaultdict(set)
        for n in graph.graph.node:
            for name in _subgraph_inputs(n):
                readers[name].add(n.name)
        declared = [v for v in graph.graph.value_info
                    if producer.get(v.name) not in kept or any(r not in kept for r in readers[v.name])]
        del graph.graph.value_info[:]
        graph.graph.value_info.extend(declared)
        converted = convert_float_to_float16(graph, keep_io_types=True, node_block_list=sorted(kept),
                                             disable_shape_infer=True)
    _drop_repeated_nodes(converted.graph)
    return converted.SerializeToString()


def to_int8(blob: bytes) -> bytes:
    """``blob`` with onnxruntime's dynamic int8 quantisation of its weights (``quantize_dynamic``, QInt8)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load_from_string(blob)
    del graph.graph.value_info[:]  # the exporter's traced shapes; the quantiser infers its own
    with tempfile.TemporaryDirectory() as tmp, _quiet_exporter():
        (Path(tmp) / "in.onnx").write_bytes(graph.SerializeToString())
        quantize_dynamic(str(Path(tmp) / "in.onnx"), str(Path(tmp) / "out.onnx"), weight_type=QuantType.QInt8)
        return (Path(tmp) / "out.onnx").read_bytes()


def _exporter_failed(name: str, task: str, exporter: str, error: Exception) -> NotImplementedError:
    first = (str(error).strip().splitlines() or [""])[0]
    return NotImplementedError(f"{name} ({task}): torch {torch.__version__}'s {exporter} ONNX exporter failed: "
                               f"{type(error).__name__}: {first[:300]}")


def output_names(count: int) -> list[str]:
    """The ONNX graph's output names for a model of ``count`` outputs: ``output``, or ``output_0`` ...
    ``output_{count-1}`` in the order the PyTorch model returns them (stable names to feed from, in place of the
    exporter's operator-derived ones such as ``linear_24``)."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _export_tensors(model: nn.Module, feeds: dict[str, torch.Tensor], outputs: int = 1) -> bytes:
    """The dynamo exporter on a model of tensor inputs (batch dynamic; token sequence length dynamic); its
    ``outputs`` outputs named by `output_names`."""
    names = list(feeds)
    if len(feeds[names[0]]) == 1:  # torch.export fixes a dimension of size 1: one sample is traced as two copies
        feeds = {n: torch.cat([t, t]) for n, t in feeds.items()}
    batch = torch.export.Dim("batch", min=1)
    # the batch is dynamic; so is the length of token sequences (2-D integer inputs such as input_ids)
    length = torch.export.Dim("length", min=2)
    dynamic = {n: ({0: batch, 1: length} if t.dim() == 2 and not t.is_floating_point() else {0: batch})
               for n, t in feeds.items()}
    buf = io.BytesIO()
    with _quiet_exporter():
        if len(names) > 1:
            torch.onnx.export(model, (), buf, kwargs=feeds, input_names=names, output_names=output_names(outputs),
                              dynamic_shapes=dynamic, dynamo=True, verbose=False)
        else:
            torch.onnx.export(model, (feeds[names[0]],), buf, input_names=names, output_names=output_names(outputs),
                              dynamic_shapes=(dynamic[names[0]],) if dynamic else None, dynamo=True, verbose=False)
    return buf.getvalue()


def export_onnx(model: nn.Module | str, path: str | os.PathLike, *, dtype: str = "fp32", int8: bool = False,
                inputs: Any = None, tolerance: float | None = None) -> dict[str, Any]:
    """Write ``model`` (a zoo name, folder or loaded model) to ``path`` as ONNX and check it with onnxruntime.

    Returns ``{"path", "dtype", "int8", "max_abs_diff", "tolerance", "inputs": {name: shape}, "outputs": [names]
    (`output_names`), "dynamic": {name: [axis names]}, "exporter", "bytes"}``, and what a task's own
    ``onnx_export`` adds.

    A model passed in (also wrapped in DataParallel/DDP or ``torch.compile``) is copied: it keeps its dtype and
    train/eval mode. A float32 model that cannot be copied (``torch.nn.utils.weight_norm``) is exported in place
    and its train/eval modes restored.

    Raises:
        TypeError: ``int8`` not a bool, ``tolerance`` not a number.
        ValueError: a module without a card (not a kdzoo model), one that cannot be copied and is not float32,
            an unknown dtype, int8 with fp16, a tolerance that is not positive and finite, or onnxruntime's outputs further from PyTorch's than
            the tolerance (nothing is written then).
        NotImplementedError: the task's inputs cannot be exported (see `example_inputs`), or torch's exporter
            fails on the model (the exception names the entry, the exporter and the error).
        OSError: ``path`` cannot be written (checked before the export; the entry and the reason named).
    """
    import zoo

    name = _label(model)
    if dtype not in TOLERANCE:
        raise ValueError(f"{name}: dtype must be one of {', '.join(TOLERANCE)}, got {dtype!r}")
    if int8 and dtype != "fp32":
        raise ValueError(f"{name}: int8 quantises an fp32 model's weights; --int8 and --dtype fp16 do not combine: "
                         "choose one")
    if not isinstance(int8, bool):
        raise TypeError(f"{name}: int8 must be True or False, got {type(int8).__name__} {int8!r}")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)):
        raise TypeError(f"{name}: tolerance must be a number, got {type(tolerance).__name__} {tolerance!r}")
    if tolerance is not None and not 0 < tolerance < math.inf:
        raise ValueError(f"{name}: tolerance must be a positive finite number, got {tolerance!r}")
    path = Path(path)
    _check_destination(path, name)
    restore: list[tuple[nn.Module, bool]] = []
    if not isinstance(model, nn.Module):
        model = zoo.load(model)
    else:  # the caller's model keeps its dtype and train/eval mode: export a copy
        from .hub import unwrap

        model = unwrap(model)  # DataParallel, DDP, torch.compile: the model inside
        if getattr(model, "card", None) is None:
            raise ValueError(f"{name}: zoo export needs a kdzoo model (from zoo.load, with .card and .preprocess); "
                             f"got a {type(model).__name__} without a card")
        try:
            model = copy.deepcopy(model)
        except Exception as e:  # e.g. torch.nn.utils.weight_norm's derived weights refuse deepcopy
            if any(t.is_floating_point() and t.dtype != torch.float32 for t in (*model.parameters(), *model.buffers())):
                raise ValueError(f"{name}: the model cannot be copied ({type(e).__name__}: {e}) and is not float32; "
                                 "pass a float32 model (model.float()) to export it") from None
            restore = [(m, m.training) for m in model.modules()]  # exported in place; its modes come back after
    name = _label(model)
    task = model.card.task
    try:
        return _export(model.float().eval(), path, name, task, dtype, int8, inputs, tolerance)
    finally:
        for m, mode in restore:
            m.training = mode


def _export(model: nn.Module, path: Path, name: str, task: str, dtype: str, int8: bool, inputs: Any,
            tolerance: float | None) -> dict[str, Any]:
    """`export_onnx` once the model is a float32 copy in eval mode and ``path`` was checked."""
    from .io import atomic_write_bytes
    from .tasks import get_adapter, known_tasks

    bound_rate = TOLERANCE[dtype] if tolerance is None else tolerance
    result: dict[str, Any] = {"path": str(path), "dtype": dtype, "int8": int8}
    custom = get_adapter(task).onnx_export(model, inputs, dtype=dtype, int8=int8, rate=bound_rate, label=name) \
        if task in known_tasks() else None
    if custom is not None:  # a task that exports its own way (one image at a time for a torchvision detector)
        blob, fields = custom
        result.update(fields)
    else:
        feeds = example_inputs(model, inputs)
        names = list(feeds)
        with torch.no_grad():
            reference = model(**feeds) if len(names) > 1 else model(feeds[names[0]])
        reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
        try:
            blob = _export_tensors(model, feeds, len(reference))
        except Exception as e:
            raise _exporter_failed(name, task, "dynamo (torch.export)", e) from e
        blob = to_fp16(blob) if dtype == "fp16" else blob
        blob = to_int8(blob) if int8 else blob
        outputs = _run_onnx(blob, feeds)
        diff = max(float(np.abs(o.astype(np.float32) - r.float().numpy()).max()) for o, r in zip(outputs, reference))
        scale = max(1.0, max(float(r.abs().max()) for r in reference))
        bound = None if int8 else bound_rate * scale
        if bound is not None and diff > bound:
            raise ValueError(f"{name}: onnxruntime differs from PyTorch by {diff:.3g} (> {bound:.3g}) on the sample "
                             "inputs; the ONNX file was not written")
        dynamic = {n: ["batch", "length"] if t.dim() == 2 and not t.is_floating_point() else ["batch"]
                   for n, t in feeds.items()}
        result.update(max_abs_diff=diff, tolerance=bound, inputs={n: list(t.shape) for n, t in feeds.items()},
                      outputs=output_names(len(reference)), dynamic=dynamic, exporter="dynamo (torch.export)")
    try:
        atomic_write_bytes(path, blob)
    except OSError as e:
        raise type(e)(f"{name}: cannot write the ONNX file {path}: {e.strerror or e}") from e
    return {**result, "bytes": len(blob)}
