"""Typed configuration. Every default is the paper's value; YAML files in configs/ hold only differences.

    cfg = load_config("configs/tiny.yaml", ["train.epochs=2", "data.root=data/toy"])

Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    """Everything :func:`pdfnet.build_pdfnet` needs, plus how to initialise it for training.

    Attributes:
        variant: which version of the authors' code to reproduce: "cvpr" (October 2025, the CVPR 2026 paper)
            or "release" (March 2025, the published checkpoint).
        embed_dim: Swin channels of the first stage (Swin-B: 128).
        depths: Swin blocks per stage (Swin-B: 2, 2, 18, 2).
        num_heads: Swin attention heads per stage (Swin-B: 4, 8, 16, 32).
        window_size: Swin window side (12, as the 384-pixel ImageNet weights).
        drop_path_rate: Swin stochastic depth, rising linearly to this over the blocks (0.1).
        pos_embed_grid: side of Swin's learned absolute position embedding (224 / 4 = 56).
        dim: channels of every decoder level (128).
        grid: patch grid side of the fine-grained patch strategy (8, i.e. 8x8 patches).
        depth_head: build the training-only depth refinement decoder (needed for the depth loss).
        dropout: dropout inside the CoA cross-attention blocks (0.1).
        pretrained_backbone: ImageNet Swin weights for the encoder: a file (Microsoft's
            ``swin_base_patch4_window12_384_22kto1k.pth``, what the original loads, or a timm state dict),
            ``timm:<model name>`` to download through timm, or null for none (training only).
        init_from: a PDFNet checkpoint (ours or the authors', e.g. PDFNet_Best.pth) to fine-tune from; it takes
            precedence over pretrained_backbone (training only).
    """

    variant: str = "cvpr"
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    drop_path_rate: float = 0.1
    pos_embed_grid: int = 56
    dim: int = 128
    grid: int = 8
    depth_head: bool = True
    dropout: float = 0.1
    pretrained_backbone: str | None = None
    init_from: str | None = None


@dataclass
class DataConfig:
    """Where DIS-5K lives and how samples are made.

    Attributes:
        root: folder holding one folder per split (see data/README.md).
        train_split, val_split: split names.
        input_size: network input side; images, depths and masks are resized to it (1024).
        train_depths: depth folders training picks from at random per sample (about a third each).
        eval_depth: depth folder of validation and testing.
        target_depth: depth folder of the loss target.
        augment: the original's augmentations on training samples.
        num_workers: data loader processes.
    """

    root: str = "data/DIS5K"
    train_split: str = "DIS-TR"
    val_split: str = "DIS-VD"
    input_size: int = 1024
    train_depths: tuple[str, ...] = ("depth_small", "depth_base", "depth_large")
    eval_depth: str = "depth_large"
    target_depth: str = "depth_large_1024"
    augment: bool = True
    num_workers: int = 4


@dataclass
class OptimConfig:
    """AdamW and its schedule (the original's timm cosine schedule with lr = warm-up lr = min lr = 1e-5, so
    effectively constant).

    Attributes:
        lr: peak learning rate.
        weight_decay: on weights only; biases and other 1-D parameters get none.
        eps, betas: AdamW's.
        warmup_epochs: linear warm-up from warmup_lr to lr.
        warmup_lr: the learning rate warm-up starts from.
        min_lr: the floor the cosine decays to.
        clip_grad: gradient norm clipping, or null for none.
    """

    lr: float = 1e-5
    weight_decay: float = 1e-4
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: int = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    clip_grad: float | None = None


@dataclass
class TrainConfig:
    """The loop.

    Attributes:
        epochs: passes over the training split (100).
        batch_size: samples per step and process (1).
        accumulation: steps whose gradients are summed before an optimiser update.
        precision: "fp16" (autocast and gradient scaling, the original's), "bf16" or "fp32".
        seed: data order, augmentation, dropout and initialisation derive from it and the epoch.
        hard_mining: train odd epochs only on the hardest half of the previous epoch's samples (the
            original's ``update_half``, off by default).
        validate: validate on the validation split after every epoch.
        log_images: samples written to TensorBoard after each validation.
        compile: torch.compile the model.
        device: "cuda", "cpu" or null for the best available.
    """

    epochs: int = 100
    batch_size: int = 1
    accumulation: int = 1
    precision: str = "fp16"
    seed: int = 0
    hard_mining: bool = False
    validate: bool = True
    log_images: int = 4
    compile: bool = False
    device: str | None = None


@dataclass
class Config:
    """A whole training run; ``output_dir`` receives config.yaml, checkpoints, metrics.jsonl and TensorBoard logs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs/pdfnet"


class ConfigError(ValueError):
    """A configuration key that does not exist or a value of the wrong type; the message names the key."""


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against (and coerced to) the type ``annotation``; ConfigError names ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string; people mean a number
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation}")


def _merge(obj: Any, updates: dict, prefix: str = "") -> Any:
    """A copy of dataclass ``obj`` with ``updates`` (nested dicts) applied, every key and type checked."""
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in hints:
            known = ", ".join(f"{prefix}{n}" for n in hints)
            raise ConfigError(f"unknown config key {key!r} (known here: {known})")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of its fields, got {value!r}")
            changes[name] = _merge(current, value, f"{key}.")
        else:
            changes[name] = _convert(value, hints[name], key)
    return dataclasses.replace(obj, **changes)


def parse_override(text: str) -> dict:
    """``"a.b=value"`` -> ``{"a": {"b": value}}``, the value read as YAML (``1e-4``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The default config, then the YAML file's differences, then ``key=value`` overrides, all checked."""
    cfg = Config()
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            cfg = _merge(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    for text in overrides:
        cfg = _merge(cfg, parse_override(text))
    return cfg


def config_from_dict(data: dict) -> Config:
    """A Config from ``to_dict`` output (as stored in checkpoints), checked like a YAML file."""
    return _merge(Config(), data)


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
