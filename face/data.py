"""An open-set stand-in for face recognition: identities are CJK characters, images are each character drawn
in a different installed font, with face-style augmentation.

No identity-labelled face images can be had offline here (../shared/DATA.md). Recognition data needs many
identities, real variation within each identity (pose, lighting, expression there; here, typeface:
stroke width, serifs, brush vs. geometric shapes, regional glyph forms) and verification on identities
never seen in training. A CJK character drawn in a dozen real typefaces has all three, and the
3,755 common characters of GB 2312 (level 1) give thousands of identities. It is a stand-in, not faces: the
cards say so, and the loaders for real data (`load_identity_folder`, `read_lfw_pairs`) take what users hold.

The ``cjk-fonts`` data set (`load_cjk`):
- faces: `FACES`, one per typeface family and weight, from Debian fonts-noto-cjk, fonts-arphic-ukai,
  fonts-arphic-uming, fonts-wqy-zenhei, fonts-wqy-microhei, fonts-ipafont-gothic/-mincho, fonts-unfonts-core;
  a character's images are the faces whose cmap covers it, and a character needs `MIN_FACES` of them;
- identities: the covered GB 2312 level-1 characters, in a fixed hash order; the first `TEST_IDENTITIES`
  are the verification identities, the next up to ``train_identities`` the training ones (disjoint);
- images: 32x32 grey, the glyph fitted to 26 px, then a seeded augmentation per image (rotation +-8
  degrees, scale 0.9-1.1, shift +-2 px, stroke blur, contrast and brightness, noise), ``per_face`` per face;
- verification pairs: 10 folds of 300 same-identity and 300 different-identity pairs of test images, drawn
  once from a fixed seed, as LFW's protocol (`read_lfw_pairs` reads LFW's own pairs.txt).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.io import data_dir  # $KDZOO_DATA, else ~/.cache/kdzoo/data

CJK = "cjk-fonts"
SIZE = 32
GLYPH = 26
TEST_IDENTITIES = 500
TRAIN_IDENTITIES = 2000
MIN_FACES = 8
FONT_DIRS = ("/usr/share/fonts",)
# (file under a font dir, face name in the file) -> one typeface; the Debian package that ships it
FACES: tuple[tuple[str, str, str], ...] = (
    ("opentype/noto/NotoSansCJK-Regular.ttc", "Noto Sans CJK SC", "fonts-noto-cjk"),
    ("opentype/noto/NotoSansCJK-Bold.ttc", "Noto Sans CJK SC Bold", "fonts-noto-cjk"),
    ("opentype/noto/NotoSerifCJK-Regular.ttc", "Noto Serif CJK SC", "fonts-noto-cjk"),
    ("opentype/noto/NotoSerifCJK-Bold.ttc", "Noto Serif CJK SC Bold", "fonts-noto-cjk"),
    ("truetype/arphic/ukai.ttc", "AR PL UKai CN", "fonts-arphic-ukai"),
    ("truetype/arphic/uming.ttc", "AR PL UMing CN", "fonts-arphic-uming"),
    ("truetype/wqy/wqy-zenhei.ttc", "WenQuanYi Zen Hei", "fonts-wqy-zenhei"),
    ("truetype/wqy/wqy-microhei.ttc", "WenQuanYi Micro Hei", "fonts-wqy-microhei"),
    ("opentype/ipafont-gothic/ipag.ttf", "IPAGothic", "fonts-ipafont-gothic"),
    ("opentype/ipafont-mincho/ipam.ttf", "IPAMincho", "fonts-ipafont-mincho"),
    ("truetype/unfonts-core/UnBatang.ttf", "Un Batang", "fonts-unfonts-core"),
    ("truetype/unfonts-core/UnDotum.ttf", "Un Dotum", "fonts-unfonts-core"),
    ("truetype/unfonts-core/UnGungseo.ttf", "Un Gungseo", "fonts-unfonts-core"),
)
# the brush-script typefaces (kai / gungseo: hand-drawn strokes, far from the printed forms): the "hard"
# images of the distribution distillation loss (`zoo.face.recipes.ddl_loss`), as low resolution or large
# pose are for faces
HARD_FACES = ("AR PL UKai CN", "Un Gungseo")
APT = "apt-get install fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-wqy-zenhei fonts-wqy-microhei " \
      "fonts-ipafont-gothic fonts-ipafont-mincho fonts-unfonts-core"


class FaceDataNotFoundError(FileNotFoundError):
    """The fonts are not installed; the message gives the apt-get command."""


def gb2312_level1() -> list[str]:
    """The 3,755 level-1 characters of GB 2312 (rows 16-55), in code order."""
    out = []
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            if hi == 0xD7 and lo > 0xF9:
                break
            out.append(bytes([hi, lo]).decode("gb2312"))
    return out


def _key(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


@dataclass(frozen=True)
class Face:
    """One typeface: its file, the index of the face in a collection, its name and package."""

    path: Path
    index: int
    name: str
    package: str


def find_faces(root: str | os.PathLike | None = None) -> list[Face]:
    """The `FACES` installed under ``root`` (default ``$KDZOO_FONTS`` or /usr/share/fonts).

    Raises:
        FaceDataNotFoundError: one of them is missing (the apt-get command is in the message).
    """
    from fontTools.ttLib import TTCollection, TTFont

    base = Path(root or os.environ.get("KDZOO_FONTS") or FONT_DIRS[0]).expanduser()
    faces = []
    for rel, name, package in FACES:
        path = base / rel
        if not path.exists():
            raise FaceDataNotFoundError(f"{path} is missing (Debian package {package}); the cjk-fonts data set needs: {APT}")
        fonts = TTCollection(str(path)).fonts if path.suffix == ".ttc" else [TTFont(str(path))]
        names = [f["name"].getDebugName(4) for f in fonts]
        if name not in names:
            raise FaceDataNotFoundError(f"{path} has no face {name!r} (it has {names})")
        faces.append(Face(path, names.index(name), name, package))
    return faces


def coverage(faces: Sequence[Face], chars: Sequence[str]) -> dict[str, list[int]]:
    """Character -> indices of the faces whose cmap maps it."""
    from fontTools.ttLib import TTCollection, TTFont

    maps = []
    for f in faces:
        font = TTCollection(str(f.path)).fonts[f.index] if f.path.suffix == ".ttc" else TTFont(str(f.path))
        maps.append(set(font.getBestCmap()))
    return {c: [i for i, m in enumerate(maps) if ord(c) in m] for c in chars}


def render(char: str, face: Face, size: int = SIZE, glyph: int = GLYPH) -> np.ndarray:
    """``char`` drawn white on black in ``face``, scaled so its ink box fits ``glyph`` px, centred in a
    ``size`` x ``size`` uint8 image."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(face.path), 4 * glyph, index=face.index)
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), char, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{face.name} draws nothing for {char!r}")
    ink = canvas.crop(box)
    scale = glyph / max(ink.size)
    ink = ink.resize((max(1, round(ink.size[0] * scale)), max(1, round(ink.size[1] * scale))), Image.BILINEAR)
    out = Image.new("L", (size, size), 0)
    out.paste(ink, ((size - ink.size[0]) // 2, (size - ink.size[1]) // 2))
    return np.array(out)


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Face-style augmentation of uint8 (N, 1, H, W) glyphs, drawn from ``generator``: a random similarity
    (rotation +-8 degrees, scale 0.9-1.1, shift +-2 px), a stroke blur (3x3 box, half the images),
    contrast 0.6-1.0 and brightness 0-40 of 255, Gaussian noise (sigma 0-8 of 255). Returns uint8."""
    n, _, h, w = images.shape
    x = images.float() / 255
    angle = (torch.rand(n, generator=generator) * 2 - 1) * (8 * torch.pi / 180)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / w)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    blur = torch.rand(n, generator=generator) < 0.5
    x = torch.where(blur[:, None, None, None], F.avg_pool2d(x, 3, 1, 1), x)
    contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    bright = 40 / 255 * torch.rand(n, 1, 1, 1, generator=generator)
    sigma = 8 / 255 * torch.rand(n, 1, 1, 1, generator=generator)
    x = x * contrast + bright + sigma * torch.randn(x.shape, generator=generator)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class FaceDataset:
    """Images of identities: ``images`` uint8 (N, 1, H, W), ``labels`` int64 (N,) indices into ``identities``
    (the split's own identities, 0..C-1), ``faces`` int64 (N,) the typeface of each image."""

    name: str
    split: str
    images: Tensor
    labels: Tensor
    identities: list[str]
    faces: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"FaceDataset({self.name}/{self.split}: {len(self.images)} images of {len(self.identities)} "
                f"identities, {tuple(self.images.shape[1:])})")

    def __post_init__(self) -> None:
        where = f"{self.name}/{self.split}"
        if len(self.images) == 0:
            raise ValueError(f"{where}: no images")
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{where}: images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"{where}: {len(self.labels)} labels for {len(self.images)} images")
        if len(self.identities) < 2:
            raise ValueError(f"{where}: {len(self.identities)} identity; recognition needs at least 2 (and "
                             "verification needs pairs of the same and of different identities)")
        counts = torch.bincount(self.labels, minlength=len(self.identities))
        if int(self.labels.max()) >= len(self.identities) or int(counts.max()) < 2:
            raise ValueError(f"{where}: every identity has a single image; same-identity pairs need at least two")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.identities)

    def batch(self, indices: Tensor, generator: torch.Generator | None = None, augment: bool = False,
              device: torch.device | str | None = None) -> dict[str, Tensor]:
        """``{"inputs", "labels": int64 (B,), "index", "paired", "hard"}``: ``inputs`` are float (B, C, H, W)
        images in [0, 1], or for the training split ``{"images", "labels"}`` (the margin head's input);
        ``augment`` applies `augment` (drawn from ``generator``).

        A training batch (``augment``) of the training split is made of identity pairs, as face training
        samples P identities x K images (K = 2 here): images 2i and 2i + 1 are ``indices[i]`` and another
        image of its identity drawn from ``generator`` (for an odd B the last image is unpaired), and
        ``paired`` is True. The batch costs what an unpaired one does (B images; an epoch's order gives the
        anchors, so about half its images are drawn as anchors and the others as partners), every arm of a run sees
        the same pairs, and pair losses (`zoo.face.recipes.ddl_loss`) read them; the layout survives
        splitting the batch into even contiguous chunks (DDP). ``hard`` (bool, B) marks the images in
        `HARD_FACES` (None when the data does not say which images are hard)."""
        indices = torch.as_tensor(indices)
        paired = bool(augment and self.split == "train" and len(indices) >= 2)
        if paired:
            count, half = len(indices), len(indices) // 2
            anchors = indices[:count - half]
            order = torch.empty(count, dtype=torch.long)
            order[0:2 * half:2] = anchors[:half]
            order[1:2 * half:2] = self.partners(anchors[:half], generator)
            if count % 2:
                order[-1] = anchors[-1]
            indices = order
        images = self.images[indices]
        if augment:
            images = globals()["augment"](images, generator if generator is not None else torch.Generator())
        x, y = images.float() / 255.0, self.labels[indices]
        if device is not None:
            x, y, indices = x.to(device, non_blocking=True), y.to(device, non_blocking=True), indices.to(device)
        # training batches give the recogniser the labels too (its margin head needs them)
        inputs = {"images": x, "labels": y} if self.split == "train" else x
        hard = self.hard_images()
        hard = None if hard is None else hard[indices.cpu()].to(y.device)
        return {"inputs": inputs, "labels": y, "index": indices, "paired": paired, "hard": hard}

    def partners(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """For each image index, another image of the same identity (uniform over the others), int64 (n,); the
        image itself for an identity with a single image (a `subset` can cut one)."""
        if not hasattr(self, "_members"):
            order = torch.argsort(self.labels, stable=True)
            counts = torch.bincount(self.labels, minlength=len(self.identities))
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order))
            self._members = (order, counts, starts, rank)
        order, counts, starts, rank = self._members
        labels = self.labels[indices]
        n, start = counts[labels], starts[labels]
        draw = torch.rand(len(indices), generator=generator if generator is not None else torch.Generator())
        step = 1 + (draw * (n - 1)).long().clamp(max=n - 2)  # 1 .. n-1: never the image itself
        return order[start + (rank[indices] - start + step) % n]

    def hard_images(self) -> Tensor | None:
        """bool (N,): the images drawn in one of `HARD_FACES`; None when the data does not say (no ``faces``
        with ``meta["typefaces"]`` naming a hard face)."""
        if not hasattr(self, "_hard"):
            names = list(self.meta.get("typefaces") or [])
            hard_ids = [i for i, name in enumerate(names) if name in HARD_FACES]
            self._hard = (torch.isin(self.faces, torch.tensor(hard_ids, dtype=torch.long))
                          if self.faces is not None and hard_ids else None)
        return self._hard

    def subset(self, count: int) -> "FaceDataset":
        """The first ``count`` images (ordered by identity: the first identities, whole), keeping every identity
        name so labels stay valid."""
        if not 2 <= count <= len(self):
            raise ValueError(f"a subset of {self.name}/{self.split} needs 2..{len(self)} images, got {count}")
        return FaceDataset(self.name, self.split, self.images[:count], self.labels[:count], self.identities,
                           None if self.faces is None else self.faces[:count], {**self.meta, "count": count})


def identity_split(chars: Sequence[str], test: int = TEST_IDENTITIES, train: int = TRAIN_IDENTITIES
                   ) -> tuple[list[str], list[str]]:
    """(train, test) identities: ``chars`` in a fixed hash order, the first ``test`` for verification and the
    next ``train`` for training; disjoint by construction."""
    order = sorted(chars, key=lambda c: _key("identity:" + c))
    if len(order) < test + 2:
        raise ValueError(f"{len(order)} identities cannot give {test} test identities and a training set")
    return order[test:test + train], order[:test]


def load_cjk(split: str = "train", *, train_identities: int = TRAIN_IDENTITIES, per_face: int | None = None,
             seed: int = 0, root: str | os.PathLike | None = None, progress: bool = True,
             cache: str | os.PathLike | None = None) -> FaceDataset:
    """The ``cjk-fonts`` split (see the module docstring): ``train`` renders each training identity in every
    covering typeface, ``per_face`` augmented images each (default 2; training adds fresh augmentation per
    step on top); ``test`` one image per typeface (default 1). Rendered once from the fonts under ``root``
    (default: the system's font folders), cached as safetensors in ``cache`` (default ``$KDZOO_DATA``, else
    ``~/.cache/kdzoo/data``).

    Raises:
        ValueError: an unknown split. FaceDataNotFoundError: the fonts are missing.
    """
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    from zoo.io import atomic_write_bytes

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    per_face = per_face or (2 if split == "train" else 1)
    faces = find_faces(root)
    key = f"{CJK}-v1-{split}-n{train_identities if split == 'train' else TEST_IDENTITIES}-k{per_face}-s{seed}"
    path = (Path(cache).expanduser() if cache is not None else data_dir()) / f"{key}.safetensors"
    cov = coverage(faces, gb2312_level1())
    usable = [c for c, f in cov.items() if len(f) >= MIN_FACES]
    train_ids, test_ids = identity_split(usable, TEST_IDENTITIES, train_identities)
    ids = train_ids if split == "train" else test_ids
    if path.exists():
        t = load_file(str(path))
        return FaceDataset(CJK, split, t["images"], t["labels"].long(), ids, t["faces"].long(),
                           {"cache": str(path), "typefaces": [f.name for f in faces]})
    images, labels, which = [], [], []
    g = torch.Generator().manual_seed(seed + (0 if split == "train" else 1_000_003))
    for label, char in enumerate(tqdm(ids, desc=f"{CJK}/{split}: rendering", disable=not progress, leave=False)):
        glyphs = torch.from_numpy(np.stack([render(char, faces[i]) for i in cov[char]]))[:, None]
        for _ in range(per_face):
            images.append(augment(glyphs, g))
            labels += [label] * len(glyphs)
            which += list(cov[char])
    tensors = {"images": torch.cat(images).contiguous(), "labels": torch.tensor(labels, dtype=torch.int32),
               "faces": torch.tensor(which, dtype=torch.int16)}
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        save_file(tensors, f"{tmp}/x.safetensors")
        atomic_write_bytes(path, Path(f"{tmp}/x.safetensors").read_bytes())
    return FaceDataset(CJK, split, tensors["images"], tensors["labels"].long(), ids, tensors["faces"].long(),
                       {"cache": str(path), "typefaces": [f.name for f in faces]})


def make_pairs(labels: Tensor, folds: int = 10, per_fold: int = 300, seed: int = 0) -> Tensor:
    """LFW-style verification pairs over a test split: ``folds`` x (``per_fold`` same-identity and ``per_fold``
    different-identity pairs) of image indices, int64 (folds, 2 * per_fold, 3): (i, j, same). Drawn from
    ``seed``; no pair twice, no image with itself. A split with fewer distinct pairs gets as many per fold as
    it has (evenly over the folds).

    Raises:
        ValueError: no identity with two images, a single identity, or too few pairs for the folds."""
    g = torch.Generator().manual_seed(seed)
    by_id: dict[int, list[int]] = {}
    for i, y in enumerate(labels.tolist()):
        by_id.setdefault(y, []).append(i)
    multi = [k for k, v in by_id.items() if len(v) >= 2]
    if not multi or len(by_id) < 2:
        raise ValueError("pairs need an identity with two images and at least two identities")
    n = len(labels)
    same_available = sum(len(v) * (len(v) - 1) // 2 for v in by_id.values())
    different_available = n * (n - 1) // 2 - same_available
    # a small test split cannot give 300 distinct pairs of each kind per fold: take what it has, evenly
    per_fold = min(per_fold, same_available // folds, different_available // folds)
    if per_fold < 1:
        raise ValueError(f"{same_available} same-identity pairs cannot fill {folds} folds")
    seen: set[tuple[int, int]] = set()
    out = []
    for _ in range(folds):
        fold = []
        for same in (1, 0):
            while sum(1 for p in fold if p[2] == same) < per_fold:
                if same:
                    ident = multi[int(torch.randint(len(multi), (1,), generator=g))]
                    a, b = torch.randperm(len(by_id[ident]), generator=g)[:2].tolist()
                    i, j = by_id[ident][a], by_id[ident][b]
                else:
                    i, j = torch.randint(len(labels), (2,), generator=g).tolist()
                    if labels[i] == labels[j]:
                        continue
                pair = (min(i, j), max(i, j))
                if pair in seen:
                    continue
                seen.add(pair)
                fold.append((pair[0], pair[1], same))
        out.append(fold)
    return torch.tensor(out, dtype=torch.long)


# ---------------------------------------------------------------- real data as users hold it
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _read(path: Path, channels: int, size: int | None) -> Tensor:
    from zoo.tasks import read_image

    return read_image(str(path), channels, size=(size, size) if size else None)


def load_identity_folder(root: str | os.PathLike, *, split: str = "test", channels: int = 1, size: int | None = SIZE,
                         name: str | None = None) -> FaceDataset:
    """An ImageFolder of identities: ``root/<identity>/<image>`` -> a `FaceDataset` (identities sorted by name).

    Images are read as ``channels`` channels and resized to ``size`` x ``size`` (None: they must all have one size).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: fewer than two identities, no identity with two images (no same-identity pairs), an
            identity folder without images, or (``size=None``) images of different sizes; each names what is
            wrong.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder of identity folders")
    folders = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(folders) < 2:
        raise ValueError(f"{base}: {len(folders)} identity folder(s); recognition and verification need at least 2")
    images, labels, first = [], [], None
    for label, folder in enumerate(folders):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files:
            img = _read(f, channels, size)
            if first is None:
                first = (f, tuple(img.shape[-2:]))
            elif size is None and tuple(img.shape[-2:]) != first[1]:
                raise ValueError(f"{f} is {tuple(img.shape[-2:])} but {first[0]} is {first[1]}; pass size= to resize them")
            images.append(img)
            labels.append(label)
    counts = torch.bincount(torch.tensor(labels))
    if int(counts.max()) < 2:
        raise ValueError(f"{base}: every identity has a single image, so there are no same-identity pairs; verification "
                         "needs at least one identity with two images")
    return FaceDataset(name or base.name, split, torch.stack(images), torch.tensor(labels), [d.name for d in folders],
                       meta={"root": str(base), "size": size})


def read_lfw_pairs(pairs_file: str | os.PathLike, image_root: str | os.PathLike, *, channels: int = 1,
                   size: int | None = SIZE) -> tuple[FaceDataset, Tensor]:
    """LFW's ``pairs.txt`` (Huang et al. 2007): a header ``folds per_fold``, then per fold ``per_fold`` lines
    ``name i j`` (same person) and ``per_fold`` lines ``name1 i name2 j`` (different), images at
    ``image_root/name/name_000i.jpg``. Returns (the pairs' distinct images as a `FaceDataset`, pairs
    int64 (folds, 2 per_fold, 3) of (image index, image index, same)).

    The whole file is checked before any image is read: each line's form, each fold's order (its
    ``per_fold`` same-person lines, then its ``per_fold`` different-person lines), a same-person line that
    pairs an image with itself, and a different-person line that names one person twice.

    Raises:
        FileNotFoundError: the pairs file or an image it names is missing (the path is named).
        ValueError: a pairs file that is not text, a header announcing no pairs, a malformed line, a line out of
            its fold's order or pairing what it must not (each names its line number), or an image that
            cannot be read (its line and path named).
    """
    path, root = Path(pairs_file), Path(image_root)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file" if path.exists() else f"{path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text file (LFW's pairs.txt is plain text)") from None
    lines = [(n, ln.split()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    try:
        folds, per_fold = int(lines[0][1][0]), int(lines[0][1][1])
    except (IndexError, ValueError):
        got = " ".join(lines[0][1]) if lines else "nothing"
        raise ValueError(f"{path}:{lines[0][0] if lines else 1}: the header must be 'folds per_fold', got {got!r}") from None
    if folds < 1 or per_fold < 1:
        raise ValueError(f"{path}:{lines[0][0]}: the header announces {folds} folds of {per_fold} + {per_fold} pairs: no pairs")
    body = lines[1:]
    if len(body) != folds * 2 * per_fold:
        raise ValueError(f"{path}: the header announces {folds} x 2 x {per_fold} pairs, the file has {len(body)} lines")
    wanted: list[tuple[int, str, int, str, int]] = []  # (line, person 1, image 1, person 2, image 2)
    for k, (line, fields_) in enumerate(body):
        same = k % (2 * per_fold) < per_fold
        try:
            if len(fields_) == 3 and same:
                pair = (line, fields_[0], int(fields_[1]), fields_[0], int(fields_[2]))
            elif len(fields_) == 4 and not same:
                pair = (line, fields_[0], int(fields_[1]), fields_[2], int(fields_[3]))
            else:
                raise ValueError
        except ValueError:
            kind = "a same-person line 'name i j'" if same else "a different-person line 'name1 i name2 j'"
            raise ValueError(f"{path}:{line}: fold {k // (2 * per_fold) + 1} expects {kind} here (each fold: "
                             f"{per_fold} same-person lines, then {per_fold} different-person lines), got "
                             f"{' '.join(fields_)!r}") from None
        if same and pair[2] == pair[4]:
            raise ValueError(f"{path}:{line}: the same-person pair names image {pair[2]} of {pair[1]} twice")
        if not same and pair[1] == pair[3]:
            raise ValueError(f"{path}:{line}: the different-person pair names {pair[1]} twice")
        wanted.append(pair)
    index: dict[tuple[str, int], int] = {}
    images, labels, names, pairs = [], [], [], []

    def image(person: str, number: int, line: int) -> int:
        key = (person, number)
        if key not in index:
            f = root / person / f"{person}_{number:04d}.jpg"
            if not f.exists():
                raise FileNotFoundError(f"{path}:{line}: {f} does not exist")
            try:
                images.append(_read(f, channels, size))
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}:{line}: {f} cannot be read as an image ({e})") from None
            if person not in names:
                names.append(person)
            index[key] = len(images) - 1
            labels.append(names.index(person))
        return index[key]

    for line, a, i, b, j in wanted:
        pairs.append((image(a, i, line), image(b, j, line), int(a == b)))
    dataset = FaceDataset(path.parent.name or "lfw", "test", torch.stack(images), torch.tensor(labels), names,
                          meta={"pairs": str(path)}) if len(set(labels)) >= 2 else None
    if dataset is None:
        raise ValueError(f"{path}: the pairs name fewer than two people")
    return dataset, torch.tensor(pairs, dtype=torch.long).reshape(folds, 2 * per_fold, 3)
