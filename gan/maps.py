"""The teacher's whole feature maps at the distilled layers, computed once and stored on disk.

GAN Compression's feature term (Li et al. 2020, eq. 3) compares the student's maps at ``model.9/12/15/18``
with the teacher's. Run live, the 11.4M-parameter teacher costs far more than the student (49.6 against
3.3 GMACs for a 256-px image at ngf 16): the third protocol run spent 100 of its 120 minutes a seed in
the teacher. The training crops are fixed (`zoo.gan.data.make_pairs`: seeded, the same for every run),
so the teacher's maps are fixed too. `teacher_maps` computes them once per (teacher weights, crops) and
keeps them as float16 in one raw file that every later run memory-maps; the batches then carry them
(``teacher_maps``) and the recipe's feature term reads them with no teacher at run time.

Storage: ``<stem>.f16``, the (N, layers, C, H/4, W/4) maps in C order, little-endian float16, and
``<stem>.json``, the shape and the sha256 of every chunk of `CHUNK` crops. Chunks are computed in
order; each is written and flushed before the manifest that vouches for it is replaced (atomically), so
a kill loses at most the chunk in progress. A chunk whose bytes do not match its sha256 is an error that
names the files (delete them to rebuild). float16 keeps 11 significant bits: a relative rounding of at
most 2^-11 against the live float32 maps, far below the MSE the term trains on (checked in
tests/test_gan.py).

At the default 2,048 crops of 128 px and ngf 64 this is 2,048 x 4 x 256 x 32 x 32 values, 4.3 GB of
disk and page cache (not process memory: the file is memory-mapped copy-on-write).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from zoo.io import atomic_write_text

from .models import MAPPING_LAYERS, from_pixels, to_pixels

CHUNK = 256  # crops per verified chunk


@torch.no_grad()
def record_maps(teacher: nn.Module, images: Tensor, batch_size: int = 8, layers: tuple[str, ...] = MAPPING_LAYERS,
                progress: bool = False, what: str = "teacher maps", sink: dict[str, list[Tensor]] | None = None) -> Tensor:
    """The teacher's outputs at ``layers`` for uint8 (N, 3, H, W) photos: float16 (N, len(layers), C, h, w).

    With ``sink``, the same forward passes also append the teacher's images (uint8 (n, 3, H, W)) to
    ``sink["images"]`` and the maps averaged over space (float32 (n, len(layers), C), from the float32 maps)
    to ``sink["pooled"]``: the pairs `zoo.gan.data.make_pairs` stores, without a second pass of the teacher.

    Raises:
        ValueError: a layer the teacher does not have, layers of different shapes, or a value beyond
            float16's range (65,504).
    """
    from tqdm import tqdm

    modules = dict(teacher.named_modules())
    missing = [m for m in layers if m not in modules]
    if missing:
        raise ValueError(f"the teacher has no module {missing[0]!r} to record (layers {list(layers)})")
    seen: dict[str, Tensor] = {}
    hooks = [modules[m].register_forward_hook(lambda mod, inp, out, m=m: seen.__setitem__(m, out.detach()))
             for m in layers]
    teacher = teacher.eval()
    device = next(teacher.parameters()).device
    out: list[Tensor] = []
    try:
        for i in tqdm(range(0, len(images), batch_size), desc=what, disable=not progress, leave=False):
            y = teacher(from_pixels(images[i:i + batch_size].to(device)))
            shapes = {tuple(seen[m].shape) for m in layers}
            if len(shapes) != 1:
                raise ValueError(f"the layers {list(layers)} give maps of different shapes {sorted(shapes)}; they are "
                                 "stored as one array")
            maps = torch.stack([seen[m].float().cpu() for m in layers], dim=1)
            if not bool(maps.abs().max() <= torch.finfo(torch.float16).max):
                raise ValueError("a teacher map exceeds float16's range; it cannot be stored in float16")
            if sink is not None:
                sink.setdefault("images", []).append(to_pixels(y))
                sink.setdefault("pooled", []).append(maps.mean(dim=(3, 4)))
            out.append(maps.to(torch.float16))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out)


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array)).cast("B")).hexdigest()


def teacher_maps(teacher: nn.Module, images: Tensor, stem: str | os.PathLike, batch_size: int = 8,
                 progress: bool = True, sink: dict[str, Any] | None = None) -> Tensor:
    """The teacher's maps at `MAPPING_LAYERS` for uint8 (N, 3, H, W) ``images``, float16 (N, layers, C, H/4,
    W/4), read from ``<stem>.f16`` (memory-mapped; see the module docstring) and computed for what it lacks.
    With ``sink`` (see `record_maps`), the crops it computes also leave their images and pooled maps there,
    from crop ``sink["start"]`` on (nothing when every map was stored).

    The caller keys ``stem`` by the teacher's weights and the crops (`zoo.gan.data.make_pairs`): a file
    holds one teacher's maps of one crop sequence, and a longer sequence extends a shorter one.

    Raises:
        ValueError: a stored chunk whose bytes do not match the manifest's sha256, or a manifest of
            another map shape (another teacher width or crop size under the same name).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)  # a fresh cache: the maps are the first file written there
    data_path, manifest_path = stem.with_name(stem.name + ".f16"), stem.with_name(stem.name + ".json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"chunks": []}
    count = len(images)
    probe = record_maps(teacher, images[:1])
    shape = list(probe.shape[1:])
    if manifest.get("shape") not in (None, shape):
        raise ValueError(f"{manifest_path} holds maps of shape {manifest['shape']}, these are {shape}: delete "
                         f"{manifest_path.name} and {data_path.name} to rebuild")
    per_crop = int(np.prod(shape))
    chunks = manifest["chunks"]
    done = sum(c["count"] for c in chunks)
    if count > done and chunks and chunks[-1]["count"] < CHUNK:  # a partial last chunk is recomputed whole
        chunks.pop()
        done = len(chunks) * CHUNK
    stored = os.path.getsize(data_path) // (2 * per_crop) if data_path.exists() else 0
    if done > stored:
        raise ValueError(f"{data_path} is shorter than {manifest_path} says ({stored} < {done} crops): delete both "
                         "to rebuild")
    if count > done:
        rows = -(-count // CHUNK) * CHUNK
        if rows > stored:
            with open(data_path, "ab") as f:
                f.truncate(rows * 2 * per_crop)
        mm = np.memmap(data_path, dtype="<f2", mode="r+", shape=(rows, *shape))
        if sink is not None:
            sink["start"] = done
        for start in range(done, count, CHUNK):
            end = min(start + CHUNK, count)
            mm[start:end] = record_maps(teacher, images[start:end], batch_size, progress=progress,
                                        what=f"teacher maps {start}-{end}/{count}", sink=sink).numpy()
            mm.flush()
            manifest["shape"] = shape
            chunks.append({"count": end - start, "sha256": _sha(mm[start:end])})
            atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
        del mm
    total = sum(c["count"] for c in chunks)
    mm = np.memmap(data_path, dtype="<f2", mode="c", shape=(os.path.getsize(data_path) // (2 * per_crop), *shape))
    for k, chunk in enumerate(chunks):
        start = k * CHUNK
        if start >= count:
            break
        if _sha(mm[start:start + chunk["count"]]) != chunk["sha256"]:
            raise ValueError(f"{data_path} crops {start}-{start + chunk['count']} do not match the sha256 in "
                             f"{manifest_path}: truncated or altered. Delete both files to rebuild them.")
    if total < count:
        raise ValueError(f"{manifest_path} covers {total} crops, {count} asked: delete both files to rebuild")
    maps = torch.from_numpy(mm[:count])
    if not torch.allclose(maps[:1].float(), probe.float(), rtol=2e-3, atol=1e-3):
        raise ValueError(f"{data_path} holds another teacher's maps or other crops than these (the first crop "
                         f"differs): delete {data_path.name} and {manifest_path.name} to rebuild")
    return maps
