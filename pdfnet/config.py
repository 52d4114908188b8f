"""Typed configuration. Every default is the paper's value; YAML files in configs/ hold only differences.

    cfg = load_config("configs/tiny.yaml", ["train.epochs=2", "data.root=data/toy"])

Everything is checked when the config loads: unknown keys, values of the wrong type, choices outside their
list (``precision``, ``variant``), numbers out of range, and booleans other than ``true``/``false`` (YAML 1.1's
``yes``/``on`` are refused, not read as true). Errors name the key, and the file and line for YAML mistakes.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .runtime import Precision

Variant = Literal["cvpr", "release"]
VARIANTS: tuple[str, ...] = typing.get_args(Variant)


def check_variant(variant: str) -> str:
    """``variant`` if it names a version of the original, else a ValueError listing them."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant


def _rule(check: Callable[[Any], bool], expected: str) -> dict:
    """Field metadata: a range check and how to say what it expects."""
    return {"check": check, "expected": expected}


_POSITIVE = _rule(lambda v: v > 0, "a positive number")
_AT_LEAST_1 = _rule(lambda v: v >= 1, "at least 1")
_NON_NEGATIVE = _rule(lambda v: v >= 0, "0 or more")
_FRACTION = _rule(lambda v: 0 <= v < 1, "in [0, 1)")
_POSITIVE_ALL = _rule(lambda v: len(v) > 0 and all(x > 0 for x in v), "a non-empty list of positive integers")


@dataclass
class ModelConfig:
    """The architecture: everything :func:`pdfnet.build_pdfnet` needs.

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
        grid: patch grid side of the fine-grained patch strategy (8, i.e. 8x8 patches; the paper also tries 4
            and 16).
        depth_head: build the training-only depth refinement decoder and train it with its SILog loss.
        dropout: dropout inside the CoA cross-attention blocks (0.1).
        use_depth: the pseudo-depth input (true). False makes an RGB-only PDFNet: no depth stream in the
            encoder, no depth parts in FSE (its projection, its two CoA blocks, the integrity-prior gating), a
            shallow branch over the image alone; it reads no depth map anywhere, so it needs
            ``model.depth_head=false`` and ``loss.integrity_prior=false`` (refused otherwise).
        use_patches: the fine-grained patch stream (true). False: no patch encoding, no patch parts in FSE (its
            projection, the boundary-weighted patch selection, its two CoA blocks); the decoder keeps working
            at the patch stream's resolution (twice the image stream's), the other streams upsampled to it.
        use_coa: the four CoA cross-attentions inside every FSE (true). False: each FSE passes on its projected,
            gated and weighted streams as they are, and only the stream-mixing convolution after it fuses them.

    ``use_depth``, ``use_patches``, ``use_coa`` and ``grid`` are the ablation switches (:data:`SWITCHES`): a
    checkpoint keeps them in its stored config, and loading it into a model with other values is refused.
    """

    variant: Variant = "cvpr"
    embed_dim: int = field(default=128, metadata=_POSITIVE)
    depths: tuple[int, ...] = field(default=(2, 2, 18, 2), metadata=_POSITIVE_ALL)
    num_heads: tuple[int, ...] = field(default=(4, 8, 16, 32), metadata=_POSITIVE_ALL)
    window_size: int = field(default=12, metadata=_POSITIVE)
    drop_path_rate: float = field(default=0.1, metadata=_FRACTION)
    pos_embed_grid: int = field(default=56, metadata=_POSITIVE)
    dim: int = field(default=128, metadata=_POSITIVE)
    grid: int = field(default=8, metadata=_POSITIVE)
    depth_head: bool = True
    dropout: float = field(default=0.1, metadata=_FRACTION)
    use_depth: bool = True
    use_patches: bool = True
    use_coa: bool = True


# The ModelConfig fields that switch parts of the network on and off (the paper's ablations) without changing the
# sizes of the rest: a checkpoint can only be used by a model with the same values.
SWITCHES: tuple[str, ...] = ("use_depth", "use_patches", "use_coa", "grid")


def model_min_size(cfg: ModelConfig) -> int:
    """Input sides must be multiples of this: with patches the coarsest patch level splits into the grid
    (32 x grid); without, the half-size image reaches stride 32 (64)."""
    return 32 * cfg.grid if cfg.use_patches else 64


@dataclass
class LossConfig:
    """Which terms the training loss has (:func:`pdfnet.training.losses.pdfnet_loss`).

    Attributes:
        integrity_prior: the depth integrity-prior loss, weighted 1/2 (true). It needs depth targets, so an
            RGB-only model (``model.use_depth=false``) must turn it off. The depth refinement head's SILog loss
            comes and goes with the head (``model.depth_head``).
    """

    integrity_prior: bool = True


@dataclass
class DataConfig:
    """Where the data lives and how samples are made.

    Attributes:
        root: folder holding the split folders (``data/DIS5K``) or one folder per dataset (``data``, holding
            ``DIS5K``, ``HRSOD``, ``UHRSD``, ...): see :mod:`pdfnet.data.layout` and data/README.md.
        train_sets: the training splits, their samples used together (``[DIS-TR]``; ``[HRSOD-TR, UHRSD-TR]``
            for the paper's second training set). Names as in :data:`pdfnet.data.layout.KNOWN_SPLITS`, or
            ``PATH:NAME``.
        val_split: the validation split, named likewise.
        input_size: network input side; images, depths and masks are resized to it (1024), a multiple of 256.
        train_depths: depth folders training picks from at random per sample (about a third each).
        eval_depth: depth folder of validation and testing.
        target_depth: depth folder of the loss target.
        augment: the original's augmentations on training samples.
        num_workers: data loader processes.
    """

    root: str = "data/DIS5K"
    train_sets: tuple[str, ...] = ("DIS-TR",)
    val_split: str = "DIS-VD"
    input_size: int = field(default=1024, metadata=_POSITIVE)
    train_depths: tuple[str, ...] = ("depth_small", "depth_base", "depth_large")
    eval_depth: str = "depth_large"
    target_depth: str = "depth_large_1024"
    augment: bool = True
    num_workers: int = field(default=4, metadata=_NON_NEGATIVE)


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

    lr: float = field(default=1e-5, metadata=_POSITIVE)
    weight_decay: float = field(default=1e-4, metadata=_NON_NEGATIVE)
    eps: float = field(default=1e-8, metadata=_POSITIVE)
    betas: tuple[float, float] = field(
        default=(0.9, 0.999), metadata=_rule(lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1)")
    )
    warmup_epochs: int = field(default=5, metadata=_NON_NEGATIVE)
    warmup_lr: float = field(default=1e-5, metadata=_NON_NEGATIVE)
    min_lr: float = field(default=1e-5, metadata=_NON_NEGATIVE)
    clip_grad: float | None = field(default=None, metadata=_POSITIVE)


@dataclass
class TrainConfig:
    """The loop, and how the network starts.

    Attributes:
        epochs: passes over the training split (100).
        batch_size: samples per step and process (1).
        accumulation: steps whose gradients are summed before an optimiser update.
        precision: "fp16" (autocast and gradient scaling, the original's), "bf16" or "fp32". Validation always
            runs in fp32, as the original's.
        seed: data order, augmentation, dropout and initialisation derive from it and the epoch.
        hard_mining: train odd epochs only on the hardest half of the previous epoch's samples (the
            original's ``update_half``, off by default).
        validate: validate on the validation split after every epoch.
        log_images: samples written to TensorBoard after each validation.
        compile: torch.compile the model.
        checkpoint_every: also write ``last.pt`` every this many steps within an epoch (0: at the end of each
            epoch only), for clusters that preempt; a multiple of ``accumulation``. Resuming from such a
            checkpoint skips the steps done and gives the weights an uninterrupted run gives.
        device: "cuda", "cpu" or null for the best available.
        pretrained_backbone: ImageNet Swin weights for the encoder: a file (Microsoft's
            ``swin_base_patch4_window12_384_22kto1k.pth``, what the original loads, or a timm state dict),
            ``timm:<model name>`` to download through timm, or null for none.
        init_from: a PDFNet checkpoint (ours or the authors', e.g. PDFNet_Best.pth) to fine-tune from; it takes
            precedence over pretrained_backbone.
        checkpoint_activations: recompute the activations of the Swin blocks and the decoder's stages in the
            backward pass instead of keeping them (:mod:`pdfnet.model.recompute`): the same gradients, much less
            memory, a second forward pass of those parts.
        freeze: "encoder" keeps the Swin encoder's weights as they start (no gradients, not in the optimiser):
            for fine-tuning on a few images, and less memory; "none" trains everything.
    """

    epochs: int = field(default=100, metadata=_AT_LEAST_1)
    batch_size: int = field(default=1, metadata=_AT_LEAST_1)
    accumulation: int = field(default=1, metadata=_AT_LEAST_1)
    precision: Precision = "fp16"
    seed: int = field(default=0, metadata=_NON_NEGATIVE)
    hard_mining: bool = False
    validate: bool = True
    log_images: int = field(default=4, metadata=_NON_NEGATIVE)
    compile: bool = False
    checkpoint_every: int = field(default=0, metadata=_NON_NEGATIVE)
    device: str | None = None
    pretrained_backbone: str | None = None
    init_from: str | None = None
    checkpoint_activations: bool = False
    freeze: Literal["none", "encoder"] = "none"


@dataclass
class Config:
    """A whole training run; ``output_dir`` receives config.yaml, checkpoints, metrics.jsonl and TensorBoard logs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    output_dir: str = "runs/pdfnet"


# Keys that moved; a file or override using the old name gets told the new one, a stored config is moved.
MOVED_KEYS = {
    "model.pretrained_backbone": "train.pretrained_backbone",
    "model.init_from": "train.init_from",
    "data.train_split": "data.train_sets",
}
# Moved keys whose values change form on the way: files and overrides that use the old name load too (configs
# written next to earlier runs hold data.train_split).
MOVED_VALUES: dict[str, Callable[[Any], Any]] = {"data.train_split": lambda split: [split]}

# Settings a resumed run may change: they do not alter the weights it computes.
# (train.checkpoint_activations recomputes what the plain pass computes: the same gradients)
HARMLESS_ON_RESUME = frozenset(
    {
        "train.epochs",
        "output_dir",
        "data.num_workers",
        "train.device",
        "train.log_images",
        "train.checkpoint_every",
        "train.checkpoint_activations",
    }
)


# ---------------------------------------------------------------------------------------------- YAML reading


class _StrictLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true and false, so that ``yes``, ``on`` or ``n`` stay strings (and
    are refused where a boolean is expected) instead of silently turning into booleans."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml_error(where: str, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"{where}{at}: not valid YAML ({problem})")


def read_yaml(text: str, where: str) -> Any:
    """Parse YAML text strictly; a syntax error becomes a ConfigError naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise _yaml_error(where, e) from e


# ------------------------------------------------------------------------------------------------- checking


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against (and coerced to) the type ``annotation``; ConfigError names ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise ConfigError(f"{key}: expected one of {', '.join(args)}, got {value!r}")
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


def _check_range(value: Any, f: dataclasses.Field, key: str) -> None:
    rule = f.metadata.get("check")
    if rule is not None and value is not None and not rule(value):
        raise ConfigError(f"{key}: expected {f.metadata['expected']}, got {value!r}")


def _merge(obj: Any, updates: dict, prefix: str = "") -> Any:
    """A copy of dataclass ``obj`` with ``updates`` (nested dicts) applied, every key, type and range checked."""
    hints = typing.get_type_hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if key in MOVED_KEYS:
            raise ConfigError(f"{key} is now {MOVED_KEYS[key]} (it belongs to training, not to the architecture)")
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
            _check_range(changes[name], fields[name], key)
    return dataclasses.replace(obj, **changes)


def check_config(cfg: Config) -> Config:
    """The checks that involve several keys; returns ``cfg``."""
    m, d = cfg.model, cfg.data
    if len(m.depths) != len(m.num_heads):
        raise ConfigError(f"model.depths and model.num_heads differ in length ({len(m.depths)}, {len(m.num_heads)})")
    multiple = model_min_size(m)
    if d.input_size % multiple:
        why = "32 x model.grid" if m.use_patches else "without patches, the half-size image at stride 32"
        raise ConfigError(f"data.input_size: expected a multiple of {multiple} ({why}), got {d.input_size}")
    _check_switches(cfg)
    if not d.train_depths:
        raise ConfigError("data.train_depths: expected at least one depth folder")
    if not d.train_sets:
        raise ConfigError("data.train_sets: expected at least one split, e.g. [DIS-TR]")
    t = cfg.train
    if t.checkpoint_every % t.accumulation:
        raise ConfigError(
            f"train.checkpoint_every: expected a multiple of train.accumulation ({t.accumulation}), so that a "
            f"checkpoint falls between optimiser updates; got {t.checkpoint_every}"
        )
    return cfg


def _check_switches(cfg: Config) -> None:
    """The ablation switches that need or exclude others."""
    m = cfg.model
    if not m.use_depth:
        # refused rather than turned off by rule: a run's config says what it trains
        depth_terms = [
            k
            for k, on in (("model.depth_head", m.depth_head), ("loss.integrity_prior", cfg.loss.integrity_prior))
            if on
        ]
        if depth_terms:
            raise ConfigError(
                f"model.use_depth=false (an RGB-only PDFNet, which reads no depth maps) cannot train what learns "
                f"from depth maps: set {' and '.join(f'{k}=false' for k in depth_terms)}"
            )
    if not m.use_patches and m.grid != ModelConfig.grid:
        raise ConfigError(
            f"model.grid={m.grid} has no effect without the patch stream (model.use_patches=false); leave it at "
            f"{ModelConfig.grid}"
        )


def parse_override(text: str) -> dict:
    """``"a.b=value"`` -> ``{"a": {"b": value}}``, the value read as YAML (``1e-4``, ``true``, ``[1, 2]``, ``null``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    value = read_yaml(raw, f"override {text!r}") if raw.strip() else ""
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML config file; ConfigError for a missing file, bad YAML or a non-mapping."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no config file {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from e
    data = read_yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optim, train, loss, output_dir)")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: Config | None = None) -> Config:
    """``base`` (default: the paper's config), then the YAML file's differences, then ``key=value`` overrides,
    all checked."""
    cfg = base if base is not None else Config()
    if path is not None:
        try:
            cfg = _merge(cfg, _move_keys(read_config_file(path), MOVED_VALUES))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}" if not str(e).startswith(str(path)) else str(e)) from e
    for text in overrides:
        cfg = _merge(cfg, _move_keys(parse_override(text), MOVED_VALUES))
    return check_config(cfg)


def _move_keys(data: dict, keys: typing.Iterable[str]) -> dict:
    """``data`` (sections of settings) with the settings of ``keys`` (old dotted names of :data:`MOVED_KEYS`)
    under their new names, values converted by :data:`MOVED_VALUES`."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old in keys:
        (old_section, old_name), (new_section, new_name) = old.split("."), MOVED_KEYS[old].split(".")
        if not isinstance(data.get(old_section), dict) or old_name not in data[old_section]:
            continue
        if not isinstance(data.get(new_section, {}), dict):
            continue  # not a mapping: _merge says so
        if new_name in data.get(new_section, {}):
            raise ConfigError(f"both {old} and {MOVED_KEYS[old]} are set; {old} is now {MOVED_KEYS[old]}")
        value = data[old_section].pop(old_name)
        data.setdefault(new_section, {})[new_name] = MOVED_VALUES.get(old, lambda v: v)(value)
    return data


def config_from_dict(data: dict) -> Config:
    """A Config from ``to_dict`` output (as stored in checkpoints, also by earlier versions), checked like a
    YAML file."""
    return check_config(_merge(Config(), _move_keys(data, MOVED_KEYS)))


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-friendly dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def flatten(cfg: Config) -> dict[str, Any]:
    """``{"train.epochs": 100, ...}``: every setting under its dotted key."""
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(to_dict(cfg), "")
    return flat


def config_changes(stored: Config, requested: Config) -> list[tuple[str, Any, Any]]:
    """(key, stored value, requested value) for every setting that differs."""
    a, b = flatten(stored), flatten(requested)
    return [(k, a[k], b[k]) for k in a if a[k] != b[k]]


def config_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
