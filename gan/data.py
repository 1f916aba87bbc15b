"""Real photographs for image-to-image distillation, all installable offline, with a fixed held-out set.

The ``photos`` data set is every colour photograph of four sources (licences on each entry's card):

- scikit-image's bundled samples (BSD-3; `skimage.data`): astronaut, chelsea, coffee, rocket, motorcycle;
- scikit-learn's two sample images (`sklearn.datasets.load_sample_image`): china, flower;
- Debian ``darknet``'s photos: dog, eagle, giraffe, horses, kite, person;
- Debian ``opencv-doc``'s example photos, 20 of them.

``scripts/get_photos.sh`` (run by ``scripts/setup.sh``) extracts the two Debian packages' photos into
``$KDZOO_DATA/photos`` (default ``~/.cache/kdzoo/data/photos``) without installing the packages; an installed package's folder
(``/usr/share/darknet/data``, ``/usr/share/doc/opencv-doc/examples/data``) is read too.

`TEST_PHOTOS` (one in four, from every source) are never cropped for training; evaluation runs on their
centre crops (`held_out`). Training reads random crops of the other photos (`PhotoCrops`), drawn from a
seeded generator so that a resumed run sees the same crops. Missing sources are a `PhotoDataNotFoundError`
naming the package to install (``scripts/setup.sh`` installs them all).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.io import data_dir  # $KDZOO_DATA, else ~/.cache/kdzoo/data

PHOTOS = "photos"
DARKNET_DIRS = ("/usr/share/darknet/data",)
OPENCV_DIRS = ("/usr/share/doc/opencv-doc/examples/data",)
# source -> photo name -> file name
SOURCES: dict[str, dict[str, str]] = {
    "skimage": {n: f for n, f in [("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
                                  ("rocket", "rocket.jpg"), ("motorcycle", "motorcycle_left.png")]},
    "sklearn": {"china": "china.jpg", "flower": "flower.jpg"},
    "darknet": {n: f"{n}.jpg" for n in ("dog", "eagle", "giraffe", "horses", "kite", "person")},
    "opencv-doc": {n: f"{n}.{'png' if n in ('graf1', 'rubberwhale1', 'smarties') else 'jpg'}" for n in (
        "aero1", "aloeL", "apple", "baboon", "board", "building", "butterfly", "ela_original", "fruits", "graf1",
        "home", "left", "leuvenA", "licenseplate_motion", "messi5", "orange", "pca_test1", "rubberwhale1",
        "smarties", "squirrel_cls")},
}
TEST_PHOTOS = ("coffee", "flower", "horses", "person", "building", "fruits", "messi5", "squirrel_cls", "baboon")
LICENSES = {"skimage": "BSD-3-Clause (scikit-image data)", "sklearn": "scikit-learn sample images (BSD-3-Clause package)",
            "darknet": "darknet (public domain package, Debian)", "opencv-doc": "OpenCV samples (Apache-2.0, Debian opencv-doc)"}
HOW = {"skimage": "pip install scikit-image", "sklearn": "pip install scikit-learn",
       "darknet": "bash scripts/get_photos.sh (extracts them from the Debian package into $KDZOO_DATA/photos), "
                  "apt-get install darknet, or set $KDZOO_DARKNET to its data folder",
       "opencv-doc": "bash scripts/get_photos.sh (extracts them from the Debian package into $KDZOO_DATA/photos), "
                     "apt-get install opencv-doc, or set $KDZOO_OPENCV_DATA to its examples/data folder"}


class PhotoDataNotFoundError(FileNotFoundError):
    """A photo source is not installed; the message says how to install it."""


def _source_dir(source: str) -> Path:
    if source == "skimage":
        try:
            import skimage.data
        except ImportError:
            raise PhotoDataNotFoundError(f"scikit-image's sample photos are missing: {HOW[source]}") from None
        return Path(skimage.data.__file__).parent
    if source == "sklearn":
        try:
            import sklearn.datasets
        except ImportError:
            raise PhotoDataNotFoundError(f"scikit-learn's sample images are missing: {HOW[source]}") from None
        return Path(sklearn.datasets.__file__).parent / "images"
    env, dirs = {"darknet": ("KDZOO_DARKNET", DARKNET_DIRS), "opencv-doc": ("KDZOO_OPENCV_DATA", OPENCV_DIRS)}[source]
    if os.environ.get(env, "").strip():  # set: it is the folder, and a mistyped one is an error, not a silent fallback
        folder = Path(os.environ[env]).expanduser()
        if not folder.is_dir():
            raise PhotoDataNotFoundError(f"${env} is {os.environ[env]!r}, which is not a folder; unset it or point it at "
                                         f"the {source} photos")
        return folder
    dirs = (str(data_dir() / "photos" / source), *dirs)
    for d in dirs:
        if Path(d).is_dir():
            return Path(d)
    raise PhotoDataNotFoundError(f"the {source} photos are not installed (looked in {', '.join(dirs)}; or set ${env}): "
                                 f"{HOW[source]}")


def photo_paths(sources: Sequence[str] = tuple(SOURCES)) -> dict[str, Path]:
    """Photo name -> file, for every photo of ``sources``.

    Raises:
        PhotoDataNotFoundError: a source, or one of its files, is missing (how to install it is named).
    """
    out = {}
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    for source in sources:
        if source not in SOURCES:
            raise ValueError(f"unknown photo source {source!r}; known: {', '.join(SOURCES)}")
        root = _source_dir(source)
        for name, file in SOURCES[source].items():
            if not (root / file).exists():
                raise PhotoDataNotFoundError(f"{root / file} is missing from the {source} photos: {HOW[source]}")
            out[name] = root / file
    return out


def read_photo(path: str | os.PathLike) -> Tensor:
    """A photo as a uint8 (3, H, W) RGB tensor (`zoo.tasks.read_image`: EXIF orientation, any bit depth,
    grey or RGBA converted)."""
    from zoo.tasks import read_image

    return read_image(str(path), 3).contiguous()


def resize_short_side(image: Tensor, side: int) -> Tensor:
    """uint8 (3, H, W) -> uint8 with the short side ``side`` (antialiased bilinear), aspect kept."""
    h, w = image.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def centre_crop(image: Tensor, side: int) -> Tensor:
    h, w = image.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return image[..., top:top + side, left:left + side]


@dataclass
class PhotoSet:
    """Named uint8 (3, H, W) photos of one split."""

    names: list[str]
    images: list[Tensor]
    split: str
    sources: dict[str, str] = field(default_factory=dict)  # photo name -> source

    def __len__(self) -> int:
        return len(self.images)


def load_photos(split: str = "train", sources: Sequence[str] = tuple(SOURCES)) -> PhotoSet:
    """The ``train`` photos (all but `TEST_PHOTOS`) or the ``test`` ones, in a fixed order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = photo_paths(sources)
    names = sorted(n for n in paths if (n in TEST_PHOTOS) == (split == "test"))
    if not names:
        raise ValueError(f"the sources {list(sources)} have no {split} photos")
    where = {n: s for s in sources for n in SOURCES[s]}
    return PhotoSet(names, [read_photo(paths[n]) for n in names], split, {n: where[n] for n in names})


def held_out(side: int = 256, sources: Sequence[str] = tuple(SOURCES)) -> tuple[list[str], Tensor]:
    """The test photos' centre crops after resizing the short side to ``side``: uint8 (N, 3, side, side).

    Raises:
        ValueError: ``side`` below 32 pixels (too small for the metrics' features)."""
    if side < 32:
        raise ValueError(f"the held-out crops need a side of at least 32 pixels, got {side}")
    test = load_photos("test", sources)
    return test.names, torch.stack([centre_crop(resize_short_side(im, side), side) for im in test.images])


class PhotoCrops:
    """Random square crops of the training photos: ``batch(indices, generator)`` -> uint8 (B, 3, crop, crop).

    Each crop picks a photo (uniformly), a scale (the crop covers ``scale`` of the photo's short side,
    uniform in ``scales``, resized to ``crop`` pixels) and a position, from ``generator``; with a seeded
    generator the crops are reproducible. ``indices`` only give the batch size (the crops are drawn,
    not enumerated); ``len`` is the nominal number of crops per epoch.
    """

    def __init__(self, photos: PhotoSet, crop: int = 128, scales: tuple[float, float] = (0.3, 1.0),
                 per_epoch: int = 2048) -> None:
        if not 0 < scales[0] <= scales[1] <= 1:
            raise ValueError(f"scales must satisfy 0 < low <= high <= 1, got {scales}")
        if crop < 32:
            raise ValueError(f"crops need a side of at least 32 pixels (the discriminator's and the metrics' "
                             f"smallest input), got {crop}")
        small = [n for n, im in zip(photos.names, photos.images) if min(im.shape[-2:]) < crop]
        if small:
            raise ValueError(f"photos smaller than the {crop}px crop: {small}")
        self.photos, self.crop, self.scales, self.per_epoch = photos, crop, scales, per_epoch

    def __len__(self) -> int:
        return self.per_epoch

    def batch(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        out = []
        for _ in range(len(indices)):
            k = int(torch.randint(len(self.photos), (1,), generator=generator))
            image = self.photos.images[k]
            h, w = image.shape[-2:]
            low, high = self.scales
            u = float(torch.rand((), generator=generator))
            side = max(self.crop, round(min(h, w) * (low + (high - low) * u)))
            top = int(torch.randint(h - side + 1, (1,), generator=generator))
            left = int(torch.randint(w - side + 1, (1,), generator=generator))
            patch = image[:, top:top + side, left:left + side]
            if side != self.crop:
                patch = F.interpolate(patch[None].float(), size=(self.crop, self.crop), mode="bilinear",
                                      antialias=True, align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            out.append(patch)
        return torch.stack(out)

    def loader(self, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
        """Endless batches from a generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        while True:
            yield self.batch(torch.arange(batch_size), g)


# ---------------------------------------------------------------- pseudo-pairs: photos and the teacher's images
TRAIN_PAIRS = 2048  # training crops of the default pair set
CROP = 128


@dataclass
class TranslationPairs:
    """Photos and the teacher's translations of them, in memory: ``inputs`` and ``targets`` uint8 (N, 3, H, W).

    The teacher's images are the targets of the plain twin (an L1 loss on pseudo-pairs) and the
    teacher-side images of the output-level distillation terms; they are computed once and cached
    (`make_pairs`), so that the 11M-parameter teacher does not run at every step for them. They are
    stored as 8-bit images (a rounding of at most 1/255 of the range).
    """

    name: str
    split: str
    inputs: Tensor
    targets: Tensor
    teacher: str = ""  # the zoo name of the generator that made the targets
    meta: dict = field(default_factory=dict)
    # the teacher's maps at `MAPPING_LAYERS`, averaged over space: float (N, layers, C), or None
    pooled: Tensor | None = None
    # the teacher's whole maps there: float16 (N, layers, C, H/4, W/4) (`zoo.gan.maps`), or None
    maps: Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) == 0:
            raise ValueError(f"{self.name}/{self.split}: no image pairs")
        if self.inputs.shape != self.targets.shape or self.inputs.dtype != torch.uint8 or self.targets.dtype != torch.uint8:
            raise ValueError(f"{self.name}/{self.split}: inputs and targets must be uint8 (N, 3, H, W) of one shape, got "
                             f"{self.inputs.dtype} {tuple(self.inputs.shape)} and {self.targets.dtype} {tuple(self.targets.shape)}")
        if self.pooled is not None and (self.pooled.dim() != 3 or len(self.pooled) != len(self.inputs)):
            raise ValueError(f"{self.name}/{self.split}: pooled teacher maps must be (N, layers, C) for the N pairs, got "
                             f"{tuple(self.pooled.shape)}")
        if self.maps is not None and (self.maps.dim() != 5 or len(self.maps) != len(self.inputs)):
            raise ValueError(f"{self.name}/{self.split}: teacher maps must be (N, layers, C, h, w) for the N pairs, got "
                             f"{tuple(self.maps.shape)}")

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, indices: Tensor, generator: torch.Generator | None = None, augment: bool = False,
              device: torch.device | str | None = None) -> dict[str, Tensor]:
        """``{"inputs": photos, "labels": the teacher's images, "index"}``, both float (B, 3, H, W) in [-1, 1],
        with ``teacher_pooled`` (B, layers, C) and ``teacher_maps`` (B, layers, C, h, w), float, when the pairs
        carry them.
        ``augment`` is accepted and ignored: the crops are already random, and a flipped photo's teacher
        image is not the flipped teacher image."""
        out = {"inputs": self.inputs[indices].float() / 127.5 - 1, "labels": self.targets[indices].float() / 127.5 - 1,
               "index": indices}
        if self.pooled is not None:
            out["teacher_pooled"] = self.pooled[indices].float()
        if self.maps is not None:
            out["teacher_maps"] = self.maps[indices].float()
        if device is not None:
            out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        return out

    def subset(self, count: int) -> "TranslationPairs":
        """The first ``count`` pairs (the crops are drawn independently, so a prefix is a fair sample)."""
        if not 1 <= count <= len(self):
            raise ValueError(f"a subset of {self.name}/{self.split} needs 1..{len(self)} pairs, got {count}")
        return TranslationPairs(self.name, self.split, self.inputs[:count], self.targets[:count], self.teacher,
                                {**self.meta, "count": count}, None if self.pooled is None else self.pooled[:count],
                                None if self.maps is None else self.maps[:count])


@torch.no_grad()
def teacher_outputs(teacher: torch.nn.Module, images: Tensor, batch_size: int = 8, progress: bool = False,
                    what: str = "teacher images") -> tuple[Tensor, Tensor | None]:
    """The teacher's images of uint8 (N, 3, H, W) photos, as uint8, and, for a 9-block `ResnetGenerator`, its
    maps at `MAPPING_LAYERS` averaged over space, float (N, layers, C), recorded in the same forward pass
    (None for any other generator)."""
    from tqdm import tqdm

    from .models import MAPPING_LAYERS, ResnetGenerator, from_pixels, to_pixels

    record = isinstance(teacher, ResnetGenerator) and teacher.n_blocks == 9
    modules = dict(teacher.named_modules())
    seen: dict[str, Tensor] = {}
    hooks = [modules[m].register_forward_hook(lambda mod, inp, out, m=m: seen.__setitem__(m, out.float().mean(dim=(2, 3))))
             for m in MAPPING_LAYERS] if record else []
    images_out, pooled = [], []
    teacher = teacher.eval()
    device = next(teacher.parameters()).device
    try:
        for i in tqdm(range(0, len(images), batch_size), desc=what, disable=not progress, leave=False):
            images_out.append(to_pixels(teacher(from_pixels(images[i:i + batch_size].to(device)))))
            if record:
                pooled.append(torch.stack([seen[m].cpu() for m in MAPPING_LAYERS], dim=1))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(images_out), torch.cat(pooled) if record else None


def make_pairs(teacher: torch.nn.Module, teacher_name: str, split: str = "train", count: int = TRAIN_PAIRS,
               crop: int = CROP, seed: int = 0, eval_side: int = 256, cache: str | os.PathLike | None = None,
               progress: bool = True, batch_size: int = 8, maps: bool = False) -> TranslationPairs:
    """The ``photos`` pairs of ``teacher``: ``count`` seeded random ``crop``-pixel crops of the training
    photos (``train``), or the held-out photos' ``eval_side`` centre crops (``test``), with the teacher's images.

    The teacher's images, and its maps at `MAPPING_LAYERS` averaged over space (for OMGD's channel term,
    which then needs no teacher at run time), are cached in ``cache`` (default ``$KDZOO_DATA/gan-pairs``), keyed by the
    teacher's weights (sha256 of its state), the split and the crop settings. The crops are drawn one
    after another from one seeded generator, so a longer set extends a shorter one: only the missing
    pairs are translated, and each chunk is saved (atomically) as it is done, so an interrupted run
    keeps what it finished.

    With ``maps`` (training pairs of a 9-block `ResnetGenerator` teacher) the pairs also carry the teacher's
    whole maps at `MAPPING_LAYERS` (`zoo.gan.maps.teacher_maps`: float16, stored beside the pairs, about
    2 MB a 128-px crop at ngf 64), for GAN Compression's feature term.

    Raises:
        ValueError: an unknown split; ``maps`` for test pairs or for a teacher that is not a 9-block
            `ResnetGenerator`; a cache file that holds other crops than this code draws.
    """
    from safetensors.torch import load_file, save_file

    from zoo.io import atomic_write_bytes
    from zoo.teacher_cache import weights_fingerprint

    from .models import ResnetGenerator

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if maps and (split != "train" or not (isinstance(teacher, ResnetGenerator) and teacher.n_blocks == 9)):
        raise ValueError("maps=True records a 9-block ResnetGenerator teacher's maps of the training crops, got "
                         f"split {split!r} and a {type(teacher).__name__}")
    fingerprint = weights_fingerprint(teacher)[:16]
    folder = Path(cache).expanduser() if cache is not None else data_dir() / "gan-pairs"
    key = (f"{fingerprint}-train-crop{crop}-seed{seed}" if split == "train" else f"{fingerprint}-test-side{eval_side}")
    key += "-v2"  # v2: with the pooled teacher maps
    path = folder / f"{key}.safetensors"
    if split == "test":
        names, inputs = held_out(eval_side)
        count = len(inputs)
    else:
        photos = load_photos("train")
        inputs = PhotoCrops(photos, crop=crop).batch(torch.arange(count), torch.Generator().manual_seed(seed))
    have = load_file(str(path)) if path.exists() else {}
    targets = have.get("targets", torch.empty(0, *inputs.shape[1:], dtype=torch.uint8))
    pooled = have.get("pooled")
    overlap = min(len(targets), count)
    if overlap and not torch.equal(have["inputs"][:overlap], inputs[:overlap]):
        raise ValueError(f"{path} holds other crops than this code draws (a changed photo set?); delete it to rebuild")
    if len(targets) > count:  # a longer set is cached: its first `count` pairs are this one
        inputs, targets = have["inputs"][:count], targets[:count]
        pooled = pooled[:count] if pooled is not None else None
    stored_maps, seen = None, {}
    if maps:  # first: the crops whose maps it computes leave their images too (one teacher pass, not two)
        from .maps import teacher_maps

        stored_maps = teacher_maps(teacher, inputs[:count], folder / f"{key}-maps", batch_size, progress, sink=seen)
    start = seen.get("start", count)
    seen_images = torch.cat(seen["images"]) if seen.get("images") else None
    seen_pooled = torch.cat(seen["pooled"]) if seen.get("pooled") else None
    chunk = 256
    while len(targets) < count:
        upto = min(count, len(targets) + chunk)
        if seen_images is not None and start <= len(targets):
            more, more_pooled = (seen_images[len(targets) - start:upto - start],
                                 seen_pooled[len(targets) - start:upto - start])
        else:
            more, more_pooled = teacher_outputs(teacher, inputs[len(targets):upto], batch_size, progress,
                                                f"teacher images {len(targets)}-{upto}/{count}")
        targets = torch.cat([targets, more])
        if more_pooled is not None:
            pooled = more_pooled if pooled is None else torch.cat([pooled, more_pooled])
        import tempfile

        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tensors = {"inputs": inputs[:len(targets)].contiguous(), "targets": targets.contiguous()}
            if pooled is not None:
                tensors["pooled"] = pooled.contiguous()
            save_file(tensors, f"{tmp}/pairs.safetensors")
            atomic_write_bytes(path, Path(f"{tmp}/pairs.safetensors").read_bytes())
    meta = {"count": count, "crop": crop if split == "train" else eval_side, "seed": seed, "cache": str(path)}
    return TranslationPairs(PHOTOS, split, inputs, targets[:count], teacher_name, meta,
                            pooled[:count] if pooled is not None else None, stored_maps)
