"""Training and validation samples from DIS-5K (and the other sets of :mod:`pdfnet.data.layout`), with the
original's augmentations.

Every random choice of a sample (which depth model's map it uses, every augmentation) is drawn from a generator
seeded by (seed, epoch, index), so a sample is the same whichever process or loader worker makes it, and a
resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageEnhance
from torch.utils.data import Dataset, Sampler

from ..errors import DatasetError
from ..io import read_gray, read_image
from ..model.layers import resize
from .layout import find_by_stem, find_split
from .processing import gray_to_tensor, mask_to_tensor, normalize_image, resize_image


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python runs (unlike ``hash``)."""
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes()) * 2654435761 % (2**63 - 1)


@dataclass
class SampleFiles:
    image: Path
    mask: Path
    depths: dict[str, Path]  # depth folder name -> file
    split: str  # the name of the split it comes from


class SegmentationDataset(Dataset):
    """One or more dataset splits (DIS-5K, HRSOD, UHRSD, DUTS, ...) as network-ready samples.

    Args:
        root: the data root the splits are found under (see :mod:`pdfnet.data.layout`).
        splits: a split name (e.g. "DIS-TR", "PATH:NAME") or several, whose samples follow each other in that
            order (index 0 is the first split's first image).
        input_size: side every image, mask and depth map is resized to.
        depth_folders: depth folders to pick from at random (evenly) per sample; one folder for evaluation;
            none for an RGB-only model (no depth map is then looked for or read).
        target_depth: depth folder of the loss target, or None (evaluation, or a loss without depth terms).
        augment: apply the original's augmentations.
        seed: base of every random choice.

    A sample (``dataset[(epoch, index)]`` or ``dataset[index]`` for epoch 0) is a dict with ``image`` (3, S, S)
    ImageNet-normalised, ``mask`` (1, S, S) in [0, 1], ``depth`` (1, S, S) in [0, 1], ``depth_target``
    (1, S, S) in [0, 1] (the input depth when there is no target folder), ``name`` (the file stem), ``size``
    (original H, W) and ``index``; without depth folders it has neither ``depth`` nor ``depth_target``.
    Its random choices depend on (seed, epoch, index) only, the index counting over all the splits.

    Raises:
        DatasetError: a split, mask or depth map is missing, naming the file and, for depth, the command that
            makes it.
    """

    def __init__(
        self,
        root: str | Path,
        splits: str | Sequence[str],
        input_size: int,
        depth_folders: Sequence[str],
        target_depth: str | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.splits = (splits,) if isinstance(splits, str) else tuple(splits)
        self.input_size = input_size
        self.depth_folders = tuple(depth_folders)
        self.target_depth = target_depth
        self.augment = augment
        self.seed = seed
        self.samples = [sample for spec in self.splits for sample in self._index(spec)]

    def _index(self, spec: str) -> list[SampleFiles]:
        split = find_split(self.root, spec)
        folders = sorted(set(self.depth_folders) | ({self.target_depth} if self.target_depth else set()))
        samples = []
        for image, mask in split.pairs():
            depths = {}
            for folder in folders:
                path = find_by_stem(split.depth_dir(folder), image.stem)
                if path is None:
                    raise DatasetError(
                        f"no depth map for {image} in {split.depth_dir(folder)}; make it with: "
                        f"python depth_prep/prepare_depth.py --data-root {self.root} --splits {spec} "
                        f"{_depth_prep_args(folder)}"
                    )
                depths[folder] = path
            samples.append(SampleFiles(image, mask, depths, split.name))
        return samples

    def split_sizes(self) -> dict[str, int]:
        """Samples per split name, in order."""
        sizes: dict[str, int] = {}
        for sample in self.samples:
            sizes[sample.split] = sizes.get(sample.split, 0) + 1
        return sizes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # One thread, as in loader workers: resampling rounds differently with other thread counts, and the
        # colour augmentation's 8-bit step can turn that rounding into whole grey levels.
        with single_thread():
            return self._make(key)

    def _make(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        files = self.samples[index]
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, index))
        S = (self.input_size, self.input_size)
        image = read_image(files.image)
        size = image.shape[:2]
        # made as the original loader makes them: 8-bit bilinear resizing with aligned corners, nearest for masks
        image = resize_image(image, S)
        mask = mask_to_tensor(read_gray(files.mask), S)
        depth = target = None
        if self.depth_folders:
            pick = (
                int(torch.randint(len(self.depth_folders), (1,), generator=gen)) if len(self.depth_folders) > 1 else 0
            )
            depth = gray_to_tensor(read_gray(files.depths[self.depth_folders[pick]]), S)
        if self.target_depth:
            target = gray_to_tensor(read_gray(files.depths[self.target_depth]), S)
        elif depth is not None:
            target = depth.clone()
        if self.augment:
            image, mask, depth, target = augment_sample(image, mask, depth, target, gen)
        sample = {"image": normalize_image(image), "mask": mask, "depth": depth, "depth_target": target}
        sample = {k: v for k, v in sample.items() if v is not None}
        return {**sample, "name": files.image.stem, "size": torch.tensor(size), "index": index}


DIS5KDataset = SegmentationDataset  # its name when it read DIS-5K only


@contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _depth_prep_args(folder: str) -> str:
    model = {"depth_small": "small", "depth_base": "base"}.get(folder, "large")
    extra = " --input-size 1024" if folder.endswith("_1024") else ""
    return f"--model {model} --out-name {folder}{extra}"


def _chance(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high)."""
    return int(torch.randint(low, high, (), generator=gen))


def rotate_and_crop(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate (nearest, zero fill), cut the largest centred square free of the corners' fill, resize back.

    The square's side is H / (cos t + sin t) for either image side, as the original (which assumes square
    inputs; ours are, after resizing).
    """
    _, H, W = x.shape
    rotated = TF.rotate(x, angle)
    theta = math.radians(abs(angle) % 180)
    theta = min(theta, math.pi - theta)
    side = int(H / (math.cos(theta) + math.sin(theta)))
    top, left = (H - side) // 2, (H - side) // 2
    return TF.resize(rotated[:, top : top + side, left : left + side], [H, W], antialias=True)


def color_enhance(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """PIL brightness, contrast (0.5..1.5), saturation (0..2) and sharpness (0..3) enhancement of (3, H, W)."""
    pil = Image.fromarray((image * 255.0).permute(1, 2, 0).numpy().astype(np.uint8))
    pil = ImageEnhance.Brightness(pil).enhance(_randint(gen, 5, 16) / 10.0)
    pil = ImageEnhance.Contrast(pil).enhance(_randint(gen, 5, 16) / 10.0)
    pil = ImageEnhance.Color(pil).enhance(_randint(gen, 0, 21) / 10.0)
    pil = ImageEnhance.Sharpness(pil).enhance(_randint(gen, 0, 31) / 10.0)
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0


def augment_sample(
    image: torch.Tensor,
    mask: torch.Tensor,
    depth: torch.Tensor | None,
    target: torch.Tensor | None,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The original's training augmentations, in its order; geometric ones move all four maps together.

    image (3, S, S) in [0, 1]; mask, depth, target (1, S, S); depth and target may be None (an RGB-only
    model's samples: the same random draws, None back). Horizontal flip (p 0.5); rotation by an integer
    angle in [-30, 30) then centre crop and resize (p 0.5); colour enhancement (p 0.5, image only); greyscale
    (p 0.25, image only); central crop by up to 30 px then resize back, bilinear with aligned corners (p 0.5).
    """
    maps = [image, mask, depth, target]
    if _chance(gen, 0.5):
        maps = [_maybe(lambda m: m.flip(-1), m) for m in maps]
    if _chance(gen, 0.5):
        angle = _randint(gen, -30, 30)
        maps = [_maybe(lambda m: rotate_and_crop(m, angle), m) for m in maps]
    if _chance(gen, 0.5):
        maps[0] = color_enhance(maps[0], gen)
    if _chance(gen, 0.25):
        maps[0] = TF.rgb_to_grayscale(maps[0], num_output_channels=3)
    if _chance(gen, 0.5):
        _, H, W = maps[0].shape
        crop_w, crop_h = _randint(gen, W - 30, W), _randint(gen, H - 30, H)
        top, left = (H - crop_h) // 2, (W - crop_w) // 2
        maps = [
            _maybe(lambda m: resize(m[None, :, top : top + crop_h, left : left + crop_w], (H, W))[0], m) for m in maps
        ]
    return tuple(maps)  # type: ignore[return-value]


def _maybe(fn, x: torch.Tensor | None) -> torch.Tensor | None:
    """``fn(x)``, or None for an absent map."""
    return None if x is None else fn(x)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: a permutation drawn from (seed, epoch), sharded over processes.

    Args:
        size: dataset length.
        seed: base seed; the order depends only on it and the epoch.
        shuffle: permute (training) or keep the order (evaluation).
        rank, world_size: this process's shard; shards are padded by wrapping to equal length when
            ``pad`` (training), so every process takes the same number of steps.
        subset: restrict an epoch to these dataset indices (hard-sample mining), in the permuted order.
        start: skip the first ``start`` keys of this process's shard (a run resumed within an epoch).
    """

    def __init__(
        self, size: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.start = 0, 0
        self.subset: list[int] | None = None

    def set_epoch(self, epoch: int, subset: Sequence[int] | None = None, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        self.subset = sorted(subset) if subset is not None else None

    def _order(self) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = list(range(self.size))
        if self.subset is not None:
            keep = set(self.subset)
            order = [i for i in order if i in keep]
        if self.pad and order and len(order) % self.world_size:
            # wrap around as often as needed: with fewer samples than processes every process still gets one
            need = self.world_size - len(order) % self.world_size
            order += [order[i % len(order)] for i in range(need)]
        return order

    def _shard(self) -> list[int]:
        return self._order()[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._shard()[self.start :]:
            yield (self.epoch, index)

    def __len__(self) -> int:
        """Keys still to come this epoch (after ``start``)."""
        return max(len(self._shard()) - self.start, 0)

    def shard_size(self) -> int:
        """This process's keys in the whole epoch."""
        return len(self._shard())


def collate(samples: list[dict]) -> dict:
    """Stack tensors (depth ones where the samples have them); keep names as a list."""
    keys = [k for k in ("image", "mask", "depth", "depth_target", "size") if k in samples[0]]
    batch = {k: torch.stack([s[k] for s in samples]) for k in keys}
    batch["name"] = [s["name"] for s in samples]
    batch["index"] = torch.tensor([s["index"] for s in samples])
    return batch
