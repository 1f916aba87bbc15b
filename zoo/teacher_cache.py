"""Teacher-output cache: teacher outputs computed once per run configuration, stored on disk, verified.

The trainer's data stream is a pure function of (data, seed, batch size, gradient accumulation,
process count): the sample order of each epoch and the augmentation of each step are drawn from
seeded generators. So the frozen teacher's outputs for micro-batch k of step s are fixed too, and
every later run with the same stream and teacher (another recipe, another student, a resumed run)
can read them instead of running the teacher. The cache key hashes all of that plus the teacher's
weights, the tapped modules and the autocast dtype; entries are grouped in chunks of steps, each a
safetensors file whose sha256 is recorded in the manifest and checked before use.

Only small outputs are cached (logits, pooled embeddings: at most ``MAX_PER_SAMPLE`` values per
sample); recipes that tap whole feature maps run their teachers as usual.

`ExampleOutputCache` is the per-example variant, for data whose examples do not change from one
epoch to the next (text, whose augmentation is done ahead of time): the teacher's outputs for
example i are stored once, by the batch's ``index``, so that only the first epoch runs the teacher
and every later epoch (and later run on the same data and teacher) reads them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn

from .io import atomic_write_bytes, atomic_write_text

MAX_PER_SAMPLE = 1024
CHUNK_STEPS = 64


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_small(tap: str, tensor: torch.Tensor) -> None:
    if tensor[0].numel() > MAX_PER_SAMPLE:
        raise ValueError(f"teacher tap {tap!r} has {tensor[0].numel()} values per sample; the teacher-"
                         f"output cache holds at most {MAX_PER_SAMPLE} (logits, pooled embeddings)")


def _write_verified(directory: Path, stem: str, blob: bytes) -> dict[str, str]:
    """Write ``blob`` atomically under a name carrying its sha256; return its manifest entry.

    The caller then writes its manifest (atomically) and drops the file the old entry named
    (`_drop_replaced`): a file a manifest names is never overwritten, so a kill between the two
    writes leaves the previous pair intact."""
    sha = hashlib.sha256(blob).hexdigest()
    name = f"{stem}-{sha[:16]}.safetensors"
    atomic_write_bytes(directory / name, blob)
    return {"sha256": sha, "file": name}


def _drop_replaced(directory: Path, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    if old and old.get("file") and old["file"] != new["file"]:
        (directory / old["file"]).unlink(missing_ok=True)


def _read_verified(directory: Path, entry: dict[str, str], manifest_path: Path) -> bytes:
    path = directory / entry["file"]
    blob = path.read_bytes() if path.exists() else b""
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise ValueError(f"teacher-output cache {path} does not match the sha256 in {manifest_path}: "
                         f"it is truncated or altered. Delete {manifest_path.name} to recompute it.")
    return blob


def _key(key_fields: dict[str, Any]) -> tuple[str, bytes]:
    blob = json.dumps(key_fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24], blob


class TeacherOutputCache:
    """Teacher outputs by (step, micro-batch), in verified chunk files under ``root/<key>/``."""

    def __init__(self, root: str | os.PathLike, key_fields: dict[str, Any]) -> None:
        self.key, blob = _key(key_fields)
        self.dir = Path(root) / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / "manifest.json"
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())
        else:
            self.manifest = {"key_fields": json.loads(blob), "chunks": {}}
        self._chunk_id: int | None = None
        self._entries: dict[str, torch.Tensor] = {}
        self._dirty = False

    def _load_chunk(self, chunk: int) -> None:
        self.flush()
        self._chunk_id, self._entries, self._dirty = chunk, {}, False
        meta = self.manifest["chunks"].get(str(chunk))
        if meta is None or "file" not in meta:  # not written yet (or by an older kdzoo: recomputed)
            return
        self._entries = dict(load_safetensors_bytes(_read_verified(self.dir, meta, self.manifest_path)))

    def _select(self, step: int) -> None:
        chunk = step // CHUNK_STEPS
        if chunk != self._chunk_id:
            self._load_chunk(chunk)

    def get(self, batch: dict[str, Any], device: torch.device) -> list[dict[str, torch.Tensor]] | None:
        """The cached outputs of every teacher for this micro-batch (``batch["position"]``), or None."""
        if batch.get("position") is None:
            return None
        step, micro = batch["position"]
        self._select(step)
        prefix = f"{step}/{micro}/"
        found = {k[len(prefix):]: v for k, v in self._entries.items() if k.startswith(prefix)}
        if not found:
            return None
        teachers: dict[int, dict[str, torch.Tensor]] = {}
        for name, tensor in found.items():
            t, tap = name.split("/", 1)
            teachers.setdefault(int(t), {})[tap] = tensor.to(device, non_blocking=True)
        return [teachers.get(i, {}) for i in range(max(teachers) + 1)]

    def put(self, batch: dict[str, Any], outputs: list[dict[str, torch.Tensor]]) -> None:
        if batch.get("position") is None:
            return
        step, micro = batch["position"]
        self._select(step)
        for t, out in enumerate(outputs):
            for tap, tensor in out.items():
                _check_small(tap, tensor)
                self._entries[f"{step}/{micro}/{t}/{tap}"] = tensor.detach().to("cpu").contiguous()
        self._dirty = True

    def flush(self) -> None:
        """Write the current chunk (atomically, under a new name) and record its sha256 in the manifest."""
        if not self._dirty or self._chunk_id is None:
            return
        blob = save_safetensors_bytes(self._entries)
        old = self.manifest["chunks"].get(str(self._chunk_id))
        entry = {**_write_verified(self.dir, f"chunk{self._chunk_id:05d}", blob), "entries": len(self._entries)}
        self.manifest["chunks"][str(self._chunk_id)] = entry
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=1))
        _drop_replaced(self.dir, old, entry)
        self._dirty = False


class ExampleOutputCache:
    """Teacher outputs by example index (``batch["index"]``), for data that is the same every epoch.

    Held in memory as one row per example and tap; `flush` writes them to ``root/<key>-<sha>.safetensors``
    (atomically) with its sha256 in ``root/<key>.json``, checked when a later run loads it.
    """

    def __init__(self, root: str | os.PathLike, key_fields: dict[str, Any], num_examples: int) -> None:
        self.key, blob = _key({**key_fields, "num_examples": num_examples})
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / f"{self.key}.json"
        self.entry: dict[str, str] = {}
        self.num_examples = num_examples
        self.filled = torch.zeros(num_examples, dtype=torch.bool)
        self.rows: dict[str, torch.Tensor] = {}
        self.key_fields = json.loads(blob)
        self._dirty = False
        manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}
        if "data" in manifest:  # (a manifest of an older kdzoo has none: recomputed)
            self.entry = manifest["data"]
            loaded = dict(load_safetensors_bytes(_read_verified(self.root, self.entry, self.manifest_path)))
            self.filled = loaded.pop("__filled__").bool()
            self.rows = loaded

    def get(self, batch: dict[str, Any], device: torch.device) -> list[dict[str, torch.Tensor]] | None:
        """The stored outputs of every teacher for the batch's examples, or None unless all are stored."""
        index = batch.get("index")
        index = index.cpu() if index is not None else None
        if index is None or not self.rows or not bool(self.filled[index].all()):
            return None
        teachers: dict[int, dict[str, torch.Tensor]] = {}
        for name, rows in self.rows.items():
            t, tap = name.split("/", 1)
            teachers.setdefault(int(t), {})[tap] = rows[index].to(device, non_blocking=True)
        return [teachers.get(i, {}) for i in range(max(teachers) + 1)]

    def put(self, batch: dict[str, Any], outputs: list[dict[str, torch.Tensor]]) -> None:
        index = batch.get("index")
        if index is None:
            return
        index = index.cpu()
        for t, out in enumerate(outputs):
            for tap, tensor in out.items():
                _check_small(tap, tensor)
                name = f"{t}/{tap}"
                value = tensor.detach().to("cpu")
                if name not in self.rows:
                    self.rows[name] = torch.zeros((self.num_examples, *value.shape[1:]), dtype=value.dtype)
                self.rows[name][index] = value
        self.filled[index] = True
        self._dirty = True

    def flush(self) -> None:
        """Write the rows (atomically, under a new name) and their sha256."""
        if not self._dirty:
            return
        blob = save_safetensors_bytes({**self.rows, "__filled__": self.filled.to(torch.uint8)})
        old, self.entry = self.entry, _write_verified(self.root, self.key, blob)
        atomic_write_text(self.manifest_path, json.dumps({"key_fields": self.key_fields, "data": self.entry,
                                                          "filled": int(self.filled.sum())}, indent=1))
        _drop_replaced(self.root, old, self.entry)
        self._dirty = False
