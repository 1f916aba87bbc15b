"""The OpenMMLab bridge of the segmentation task: an mmsegmentation model as a kdzoo segmenter.

A user who holds an mmseg config (a file, or the package's own config name such as
``mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py``) and optionally its checkpoint gets a module
that the rest of kdzoo treats like any segmenter:

- ``MMSegmenter(images)`` takes [0, 1] RGB images (N, 3, H, W) and returns the decode head's logits
  resized to (N, C, H, W), so evaluation, prediction and the twin protocol work unchanged;
- in training the returned logits carry ``mm_loss``: a function of the batch's (N, H, W) masks that
  gives mmseg's own loss dict (the decode head's and the auxiliary heads' losses, their weights and
  ignore index from the config), which the task loss sums (`mm_task_loss`) as mmengine's
  ``parse_losses`` does (every key containing ``loss``);
- its modules are tapped by path like any module (``mm.decode_head.conv_seg``: the logits before
  resizing; ``mm.backbone.layer4``: the last stage), so every recipe distils it;
- the card's ``config`` records the whole mm model config (``mm_model``), so `zoo.load` rebuilds it
  without the config files.

The images are normalised with the config's ``data_preprocessor`` mean and std (0-255 scale) inside the
model; the preprocessor's padding and BGR handling are not used (kdzoo's images are RGB tensors of one
size). mmcv's ops are not needed by the models used here, but mmseg imports mmcv: install the bridge
with ``bash scripts/setup_openmmlab.sh``.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "mmseg:"
INSTALL = "bash scripts/setup_openmmlab.sh (it builds mmcv 2.1.0 once and installs mmengine, mmdet and mmsegmentation)"


class OpenMMLabMissingError(ImportError):
    """mmsegmentation or mmdet (or mmcv/mmengine) is not installed; the message gives the install command."""


def _require() -> Any:
    return require_openmmlab("mmseg", "mmsegmentation 1.2")


def require_openmmlab(package: str, needs: str) -> Any:
    """The ``MODELS`` registry of the OpenMMLab ``package`` (``mmseg``, ``mmdet``), its modules registered;
    `OpenMMLabMissingError` naming ``needs`` and the install command when it (or mmcv/mmengine) is missing."""
    import importlib

    try:
        importlib.import_module(package)  # first: its submodules may be cached while the package is not importable
        registry = importlib.import_module(f"{package}.registry")
        importlib.import_module(f"{package}.utils").register_all_modules(init_default_scope=True)
    except ImportError as e:
        raise OpenMMLabMissingError(f"the {package} bridge needs {needs} on mmcv 2.1 ({e.name or e} is missing): "
                                    f"{INSTALL}") from None
    return registry.MODELS


def is_mm_architecture(architecture: str) -> bool:
    """Whether ``architecture`` names an mmseg config (``mmseg:<config file or package config name>``)."""
    return isinstance(architecture, str) and architecture.startswith(PREFIX)


def load_model_config(config: str | Path) -> dict[str, Any]:
    """The ``model`` dict of an mmseg config: ``config`` is a config file, a name in the package's own
    configs (``mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py``) or in kdzoo's
    (``kdzoo::fcn_r18_c16.py``, segmentation/configs); the ``mmseg:`` architecture prefix is removed first.

    Raises:
        OpenMMLabMissingError: mmseg missing. FileNotFoundError: no such file or package config.
        ValueError: the config has no ``model``."""
    _require()
    return read_model_config(str(config), "mmseg", Path(__file__).parent / "configs",
                             "'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'")


def read_model_config(name: str, package: str, shipped: Path, example: str) -> dict[str, Any]:
    """The ``model`` dict of an OpenMMLab config (mmengine's ``Config``), shared by the mmseg and mmdet
    bridges: ``name`` is ``<package>:`` (the architecture prefix, removed) followed by a config file, a name in
    the installed ``package``'s own configs (``<package>::dir/file.py``) or in kdzoo's folder ``shipped``
    (``kdzoo::file.py``). ``example`` names a package config for the error message.

    Raises:
        FileNotFoundError: no such file or package config (the shipped ones listed). ValueError: no ``model``."""
    from mmengine.config import Config

    prefix = package + ":"
    if name.startswith(prefix) and not name.startswith(prefix + ":"):
        name = name[len(prefix):]
    try:
        if name.startswith("kdzoo::"):  # the configs kdzoo ships (segmentation/configs, detection/configs)
            path = shipped / name[len("kdzoo::"):]
            if not path.is_file():
                listed = sorted(p.name for p in shipped.glob("*.py"))
                raise FileNotFoundError(f"kdzoo ships no {package} config {name[len('kdzoo::'):]!r}; it ships: "
                                        f"{', '.join(listed)}")
            cfg = Config.fromfile(str(path))
        elif name.startswith(prefix + ":"):
            # the package's own configs (mmengine.hub.get_config needs pkg_resources, gone from setuptools >= 81)
            import importlib

            module = importlib.import_module(package)
            rel = name[len(prefix) + 1:]
            path = Path(module.__file__).parent / ".mim" / "configs" / rel
            if not path.is_file():
                raise FileNotFoundError(f"{package} {module.__version__} has no config {rel!r} "
                                        f"(its configs are in {path.parents[len(Path(rel).parts) - 1]})")
            cfg = Config.fromfile(str(path))
        else:
            if not Path(name).is_file():
                raise FileNotFoundError(f"no {package} config file {name!r} (give a file, or a package config such as "
                                        f"{example})")
            cfg = Config.fromfile(name)
    except FileNotFoundError:
        raise
    except Exception as e:  # mmengine raises several kinds for a missing package config
        raise FileNotFoundError(f"{package} config {name!r} could not be read: {type(e).__name__}: {e}") from None
    if "model" not in cfg:
        raise ValueError(f"{package} config {name!r} has no 'model'")
    return cfg.to_dict()["model"]


def _set_classes(model_cfg: dict[str, Any], num_classes: int) -> None:
    heads = model_cfg.get("decode_head")
    aux = model_cfg.get("auxiliary_head")
    for head in ([heads] if isinstance(heads, dict) else list(heads or [])) + \
                ([aux] if isinstance(aux, dict) else list(aux or [])):
        head["num_classes"] = num_classes


def cpu_norms(cfg: Any) -> Any:
    """SyncBN (the configs' multi-GPU default) as BN: SyncBN runs only in a distributed CUDA job."""
    if isinstance(cfg, dict):
        out = {k: cpu_norms(v) for k, v in cfg.items()}
        if out.get("type") == "SyncBN":
            out["type"] = "BN"
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(cpu_norms(v) for v in cfg)
    return cfg


def register_normalisation(module: nn.Module, preprocessor: dict[str, Any]) -> None:
    """Give ``module`` the buffers ``mean`` and ``std`` (1, 3, 1, 1) of an OpenMMLab ``data_preprocessor``
    (0-255 scale; ImageNet's when absent) on the [0, 1] scale of kdzoo's images, kept out of the state dict."""
    mean = preprocessor.get("mean") or [123.675, 116.28, 103.53]
    std = preprocessor.get("std") or [58.395, 57.12, 57.375]
    module.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / 255.0, persistent=False)
    module.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) / 255.0, persistent=False)


IMAGENET_MOBILENET_V2 = "kdzoo::mobilenet_v2_imagenet"  # a backbone init_cfg checkpoint: torchvision's ImageNet weights


def asks_imagenet_mobilenet_v2(cfg: dict[str, Any]) -> bool:
    """Whether an mm model config's backbone asks for torchvision's ImageNet MobileNetV2 weights
    (``init_cfg=dict(type='Pretrained', checkpoint='kdzoo::mobilenet_v2_imagenet')``), which exist offline."""
    init = (cfg.get("backbone") or {}).get("init_cfg") or {}
    return isinstance(init, dict) and init.get("checkpoint") == IMAGENET_MOBILENET_V2


def load_mobilenet_v2_imagenet_mm(backbone: nn.Module) -> str:
    """Load torchvision's ImageNet MobileNetV2 weights (`zoo.classification.pretrained`, sha256-checked) into
    mmdet's or mmseg's ``MobileNetV2`` backbone (widen factor 1; strides and dilations do not change the
    weights); returns the file's sha256. They list the same tensors in the same order (``conv1``,
    ``layer1``-``layer7`` and mmdet's ``conv2`` are torchvision's ``features.0``, ``features.1``-``features.17``
    and ``features.18``; mmseg's backbone has no ``conv2``, so ``features.18`` is left out), so they are paired
    in order, each pair checked by shape.

    Raises: FileNotFoundError: the weights are not on this machine (the message says how to get them);
    ValueError: a backbone of another shape (a widen factor, another architecture)."""
    from torchvision.models import mobilenet_v2

    from zoo.classification.pretrained import load_mobilenet_v2_imagenet

    net = mobilenet_v2()
    digest = load_mobilenet_v2_imagenet(net)
    source, target = net.features.state_dict(), backbone.state_dict()
    last_conv = [k for k in source if k.startswith("18.")]  # the 1x1 conv to 1280 channels, absent in mmseg's
    pairs = list(zip(target.items(), source.items()))
    wrong = [f"{k} {tuple(v.shape)} vs {j} {tuple(w.shape)}" for (k, v), (j, w) in pairs if v.shape != w.shape]
    counts = (len(source), len(source) - len(last_conv))  # mmdet's (with conv2), mmseg's (without)
    if len(target) not in counts:
        raise ValueError(f"the backbone is not torchvision's MobileNetV2: {len(target)} tensors, not {counts[0]} "
                         f"(mmdet's) or {counts[1]} (mmseg's)")
    if wrong:
        raise ValueError(f"the backbone is not torchvision's MobileNetV2 (widen factor 1): {len(wrong)} tensors of "
                         f"other shapes, e.g. {wrong[0]}")
    backbone.load_state_dict({k: w for (k, _), (_, w) in pairs})
    return digest


class MMSegmenter(nn.Module):
    """An mmseg segmentor (``mm``, built from ``model_cfg``) on [0, 1] RGB images (N, 3, H, W) -> logits
    (N, C, H, W) at the input's size; in training the logits carry ``mm_loss`` (see the module docstring). Its
    weights start at PyTorch's defaults (mmengine's ``init_weights`` is not called); with ``pretrained``, a
    MobileNetV2 backbone whose config asks for ``kdzoo::mobilenet_v2_imagenet`` starts from torchvision's ImageNet
    weights (``backbone_weights`` is then their sha256).

    Raises: ValueError: ``num_classes`` < 2, a backbone that asks for the ImageNet MobileNetV2 weights but is not
    that network; FileNotFoundError: those weights are not on this machine (the message says how to get them)."""

    checkpoint_prefix = "mm."  # the mm model's own state-dict keys live under this prefix (zoo.reported.load)
    # said when a recipe's default tap (a torchvision segmenter's module path) is not in the model
    tap_hint = ("An mmseg model is tapped by its own paths: 'logits' (its output at the input's size), "
                "'mm.decode_head.conv_seg' (the logits before resizing), 'mm.decode_head.convs' (the head's features), "
                "'mm.backbone.<stage>'")

    def __init__(self, model_cfg: dict[str, Any], architecture: str, num_classes: int, pretrained: bool = False) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        models = _require()
        imagenet = pretrained and asks_imagenet_mobilenet_v2(model_cfg)
        cfg = cpu_norms(copy.deepcopy(model_cfg))
        _set_classes(cfg, num_classes)
        pre = cfg.pop("data_preprocessor", None) or {}
        # a config's `pretrained` / `init_cfg` name ImageNet weights to download at init_weights(), which is never
        # called here: the weights come from a checkpoint (build_mm_segmenter) or the card
        self.pretrained_ignored = cfg.pop("pretrained", None)
        with warnings.catch_warnings():  # two notices mmseg prints at every build: its CE's averaging (README) and
            warnings.filterwarnings("ignore", message=".*avg_non_ignore.*")  # a deprecated builder it calls itself
            warnings.filterwarnings("ignore", message=".*build_loss.*would be deprecated.*")
            self.mm = models.build(cfg)
        # torchvision's ImageNet MobileNetV2 (offline), for a fresh build from a config that asks for it; a card's
        # weights replace it on loading, so zoo.load never needs the file
        self.backbone_weights = load_mobilenet_v2_imagenet_mm(self.mm.backbone) if imagenet else None
        self.architecture = architecture
        self.model_cfg = cfg  # the config the model was built from (num_classes and norms set)
        self.num_classes = num_classes
        register_normalisation(self, pre)

    @property
    def config(self) -> dict[str, Any]:
        """What the card records to rebuild the model (`build_mm_segmenter`)."""
        return {"num_classes": self.num_classes, "mm_model": json.loads(json.dumps(self.model_cfg, default=str))}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"an MMSegmenter takes RGB images (N, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        feats = self.mm.extract_feat(x)
        head_logits = self.mm.decode_head(feats)
        logits = F.interpolate(head_logits, size=images.shape[-2:], mode="bilinear",
                               align_corners=getattr(self.mm.decode_head, "align_corners", False))
        if self.training:
            aux = getattr(self.mm, "auxiliary_head", None)
            heads = [] if aux is None else list(aux) if isinstance(aux, nn.ModuleList) else [aux]
            # the auxiliary heads run here, once per step (their dropout drawn once), as in mmseg's loss()
            names = ["aux"] if len(heads) == 1 and not isinstance(aux, nn.ModuleList) else [f"aux_{i}" for i in range(len(heads))]
            outputs = [("decode", self.mm.decode_head, head_logits)] + [(n, h, h(feats)) for n, h in zip(names, heads)]
            logits.mm_loss = self._loss_fn(outputs, images.shape[-2:])
        return logits

    @staticmethod
    def _loss_fn(outputs: list[tuple[str, nn.Module, torch.Tensor]], size: Any
                 ) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        def mm_loss(masks: torch.Tensor) -> dict[str, torch.Tensor]:
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample

            samples = []
            for m in masks:
                s = SegDataSample(metainfo={"img_shape": tuple(size), "ori_shape": tuple(size), "pad_shape": tuple(size)})
                s.gt_sem_seg = PixelData(data=m[None].long())
                samples.append(s)
            losses: dict[str, torch.Tensor] = {}
            for name, head, out in outputs:
                losses.update({f"{name}.{k}": v for k, v in head.loss_by_feat(out, samples).items()})
            return losses

        return mm_loss


def mm_task_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The sum of mmseg's own losses (every key containing ``loss``, as mmengine's ``parse_losses``) for
    logits of an `MMSegmenter` in training mode.

    Raises: ValueError: logits without ``mm_loss`` (not an MMSegmenter's, or from eval mode)."""
    fn = getattr(logits, "mm_loss", None)
    if fn is None:
        raise ValueError("mm_task_loss needs the logits of an MMSegmenter in training mode (they carry mm_loss)")
    losses = fn(masks)
    return sum(v.float() for k, v in losses.items() if "loss" in k)


def build_mm_segmenter(architecture: str, num_classes: int, *, mm_model: dict[str, Any] | None = None,
                       checkpoint: str | Path | None = None) -> MMSegmenter:
    """An `MMSegmenter` for ``num_classes`` from ``mm_model`` (a card's recorded config) or else from the
    config that ``architecture`` names (``mmseg:<file or mmseg::name>``), with an optional mm checkpoint
    (``state_dict`` of an mmseg ``.pth``, read with ``weights_only=True``; a decode head of another class count
    is left at its initialisation, and said so).

    Raises:
        OpenMMLabMissingError, FileNotFoundError, ValueError (see `load_model_config`); ValueError: a checkpoint
        whose keys do not fit the model (the mismatched keys named)."""
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    cfg = mm_model if mm_model is not None else load_model_config(architecture)
    # a config's ImageNet backbone is loaded for a fresh build; a card's recorded config has the trained weights
    model = MMSegmenter(cfg, architecture, num_classes, pretrained=mm_model is None and checkpoint is None)
    if checkpoint is not None:
        skipped = load_mm_checkpoint(model.mm, checkpoint)
        if skipped:
            import warnings

            warnings.warn(f"{Path(checkpoint).name}: {len(skipped)} tensors of other shapes left at their initialisation "
                          f"(e.g. a head for another number of classes): {', '.join(skipped[:4])}", stacklevel=2)
    return model


def load_mm_checkpoint(model: nn.Module, checkpoint: str | Path, head_keys: tuple[str, ...] = ("conv_seg",)) -> list[str]:
    """Load an OpenMMLab checkpoint (``{"state_dict": ...}`` or a bare state dict, ``weights_only=True``) into
    ``model``; MMRazor's ``architecture.`` prefix is stripped and its teacher/distiller keys dropped. Keys
    of the class-dependent layers (containing one of ``head_keys``: mmseg's ``conv_seg``, mmdet's ``fc_cls`` and
    ``fc_reg``) whose shapes differ (a head of another class count) are skipped and returned.

    Raises: FileNotFoundError; ValueError: keys the model lacks or lacks of the checkpoint, or other tensors of
    other shapes (a checkpoint of another config), named."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or pickled objects weights_only refuses
        raise ValueError(f"{path.name} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path.name} holds no state dict (a dict of named tensors, or one under 'state_dict')")
    if any(k.startswith("architecture.") for k in state):
        state = {k[len("architecture."):]: v for k, v in state.items() if k.startswith("architecture.")}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    skipped = [k for k in mismatched if any(h in k for h in head_keys)]
    other = [k for k in mismatched if k not in skipped]
    if other:
        raise ValueError(f"checkpoint {path.name} does not fit this config: {len(other)} tensors of other shapes, e.g. "
                         + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in other[:3]))
    state = {k: v for k, v in state.items() if k not in skipped}
    missing = sorted(set(own) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path.name} does not fit this config: "
                         f"{len(missing)} keys missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}), "
                         f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])}{', ...' if len(unexpected) > 5 else ''})")
    model.load_state_dict(state, strict=False)
    return skipped
