"""Image files and arrays in: the loading side of the image job (:mod:`gananomaly.pipelines.image`).

A folder is read with Pillow (grey or RGB, resized to one size; unreadable files skipped with a
warning naming each, or an error listing them); a ``.npy`` is one split, a ``.npz`` holds
``train`` and optionally ``test`` with ``test_kinds`` or ``test_labels``. See the job's docstring
for the folder layout.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "list_images", "load_image_files", "load_image_source", "text_name"]

# the job's messages keep one logger name, whichever of its modules writes them
log = logging.getLogger("gananomaly.pipelines.image")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_MODES = {"grey": "L", "gray": "L", "rgb": "RGB"}
#: Pixels an image file may declare (width x height, e.g. 8192 x 4096): a file is decoded at the
#: size its header declares before it is resized, so a few-KB file declaring 12000 x 12000
#: 16-bit pixels would take gigabytes. Larger files are named and skipped (or refused).
MAX_FILE_PIXELS = 2**25


@dataclass
class ImageSet:
    """Images loaded for the pipeline.

    ``images`` is channel-first ``(n, C, H, W)`` float64 (pixel values 0..255 for files),
    ``names`` the file names (relative to the data folder) or ``"<array>[i]"``, ``kinds``
    ``"normal"``/defect kind per image (None when unlabelled), ``skipped`` the files that
    could not be read, with the reason.
    """

    images: np.ndarray
    names: list[str]
    kinds: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _mode(mode: str) -> str:
    try:
        return _MODES[mode.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"mode must be 'grey' or 'rgb', got {mode!r}") from None


def _size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return size


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, sorted; linked folders are followed (each real folder once).
    Hidden files and folders (a name starting with ".": ``.ipynb_checkpoints/``, ``._x.png``
    of macOS) are not images of the data set. A link to nothing is listed (and then named as
    unreadable), not dropped in silence."""
    out, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree: read each folder once
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")
                and ((Path(root) / f).is_file() or (Path(root) / f).is_symlink())]
    return sorted(out)


def scoring_folder(folder: Path) -> Path:
    """The folder whose images a scoring job scores: a data set folder's ``test/`` (its training
    images and defect masks are no images to score), else the folder itself."""
    return folder / "test" if (folder / "test").is_dir() else folder


def text_name(name: str) -> str:
    """A file name as text that can be written anywhere (bytes that are not UTF-8 escaped)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def load_image_files(
    paths: list[Path],
    *,
    mode: str = "grey",
    size: int | tuple[int, int] | None = None,
    on_error: str = "skip",
    root: Path | None = None,
    allow_empty: bool = False,
) -> ImageSet:
    """Read image files with Pillow into one ``(n, C, H, W)`` array.

    Parameters
    ----------
    paths : list of path
    mode : {"grey", "rgb"}
        Colour conversion applied to every file (C = 1 or 3).
    size : int, (height, width) or None
        Resize every image to it (bilinear). None: the size of the first readable image;
        images of another size are resized to it with a warning.
    on_error : {"skip", "raise"}
        What to do with files Pillow cannot read: skip them with a warning naming each,
        or raise ``ValueError`` naming them all.
    root : path, optional
        Names are given relative to it.
    allow_empty : bool, default=False
        When no file can be read (and ``size`` is given): an empty set, with the skipped
        files, instead of an error.

    Returns
    -------
    ImageSet
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    pil_mode = _mode(mode)
    target = _size(size)
    arrays, names, skipped = [], [], []
    resized = 0
    for path in paths:
        name = text_name(str(path.relative_to(root)) if root is not None else str(path))
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_FILE_PIXELS:  # read from the header, nothing decoded yet
                    raise ValueError(f"it declares {img.width} x {img.height} pixels, more than the "
                                     f"{MAX_FILE_PIXELS} an image file may have here; shrink it first")
                img.load()
                img = _converted(ImageOps.exif_transpose(img), pil_mode)  # as a viewer shows the photo
                if target is None:
                    target = (img.height, img.width)
                if (img.height, img.width) != target:
                    resized += 1
                    img = img.resize((target[1], target[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float64)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
            skipped.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        if arr.ndim == 2 and pil_mode == "RGB":  # a grey image of more than 8 bits, scaled as one channel
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        arrays.append(arr[None] if arr.ndim == 2 else np.moveaxis(arr, 2, 0))
        names.append(name)
    if skipped:
        listing = "; ".join(f"{n} ({why})" for n, why in skipped)
        if on_error == "raise":
            raise ValueError(f"{len(skipped)} image file(s) could not be read: {listing}")
        log.warning("skipped %d unreadable image file(s): %s", len(skipped), listing)
    if resized and size is None:
        log.warning("%d image(s) had another size than %dx%d and were resized to it", resized, *target)
    if not arrays:
        if allow_empty and target is not None:
            return ImageSet(np.empty((0, 3 if pil_mode == "RGB" else 1, *target)), [], None, skipped)
        raise ValueError("no readable images" + (f" (skipped: {', '.join(n for n, _ in skipped)})" if skipped else ""))
    return ImageSet(np.stack(arrays), names, None, skipped)


def _converted(img, pil_mode: str):
    """``img`` in ``pil_mode`` ("L" or "RGB"), pixel values 0..255. A grey image of 16-bit
    integers (Pillow's modes ``I;16*``; ``I`` for a PNG, whose samples have at most 16 bits)
    is scaled by its type's range, 65535 -> 255, into a float image (one channel, which the
    caller repeats for RGB): Pillow's own conversion would clip every value above 255.
    Other images of more than 8 bits per sample (32-bit integers, floats) have no range to
    scale by: refused (a ValueError, which names the file where it is reported)."""
    from PIL import Image

    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):
        values = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(values.astype(np.float32))  # mode "F"
    if img.mode in ("I", "F"):
        raise ValueError(f"{'32-bit integer' if img.mode == 'I' else 'floating-point'} pixels (mode {img.mode}) "
                         "have no fixed range to scale to 0..255; save the image with 8 or 16 bits per sample")
    return img.convert(pil_mode)


def _array_images(arr: np.ndarray, channels: str, prefix: str) -> ImageSet:
    from gananomaly.images import to_channels_first

    arr = np.asarray(arr)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{prefix}: image arrays must be (n, H, W), (n, C, H, W) or (n, H, W, C), got {arr.shape}")
    imgs = to_channels_first(arr.astype(np.float64), channels)
    return ImageSet(imgs, [f"{prefix}[{i}]" for i in range(len(imgs))])


def _load_array(src: Path, archive, key: str | None = None) -> np.ndarray:
    """One array of a .npy (``archive`` None) or of an open .npz, never unpickling; an object
    array (strings from pandas, say) is named with what to do."""
    try:
        return np.load(src, allow_pickle=False) if archive is None else archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        where = src.name if key is None else f"{src.name}:{key}"
        raise ValueError(f"{where!r} holds Python objects, which are never unpickled; save plain arrays "
                         f"(strings with .astype(str), numbers as numbers)") from None


# The kind of a normal test image, and the test/ subfolders that hold normal images ("good"
# is MVTec AD's name for them).
NORMAL_KIND = "normal"
NORMAL_FOLDERS = ("normal", "good")


def npz_keys_hint(src: Path) -> str:
    """``: it has no 'test' array (found [...])...`` for an ``.npz`` file, else ``""``: what an
    error about a source without images to score adds."""
    if not (src.is_file() and src.suffix.lower() == ".npz"):
        return ""
    with np.load(src, allow_pickle=False) as z:
        if "test" in z.files:
            return ": its 'test' array is empty"
        return f": it has no 'test' array (found {sorted(z.files)}); an .npz is scored by its 'test' array"


def load_image_source(
    source: str | os.PathLike,
    *,
    split: str = "train",
    mode: str = "grey",
    size: int | tuple[int, int] | None = None,
    on_error: str = "skip",
    channels: str = "auto",
) -> ImageSet | None:
    """Load one split (``"train"`` or ``"test"``) of a folder, ``.npy`` or ``.npz`` source.

    A folder without ``train/``/``test/`` subfolders is read whole as the requested split;
    ``.npy`` is the requested split. Returns None when the source has no such split.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"image source {str(src)!r} does not exist")
    if src.is_file():
        suffix = src.suffix.lower()
        if suffix == ".npy":
            return _array_images(_load_array(src, None), channels, src.name)
        if suffix == ".npz":
            with np.load(src, allow_pickle=False) as z:
                if split not in z.files:
                    if split == "train":
                        raise ValueError(f"{str(src)!r} has no 'train' array (found {sorted(z.files)})")
                    return None
                out = _array_images(_load_array(src, z, split), channels, f"{src.name}:{split}")
                if split == "test":
                    if "test_kinds" in z.files:
                        out.kinds = [str(k) for k in _load_array(src, z, "test_kinds")]
                    elif "test_labels" in z.files:
                        out.kinds = ["anomaly" if int(v) else "normal" for v in _load_array(src, z, "test_labels")]
                    if out.kinds is not None and len(out.kinds) != len(out.images):
                        raise ValueError(f"{str(src)!r}: {len(out.kinds)} test labels for {len(out.images)} images")
            return out
        raise ValueError(f"image source {str(src)!r} must be a folder, a .npy or a .npz file")
    sub = src / split
    if not sub.is_dir():
        if split == "train" and not (src / "test").is_dir():
            sub = src
        else:
            return None
    paths = list_images(sub)
    if not paths:
        if split == "train":
            raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(sub)!r}")
        return None
    out = load_image_files(paths, mode=mode, size=size, on_error=on_error, root=src)
    if split == "test":
        kinds = []
        for name in out.names:
            parts = Path(name).parts  # ("test", kind, file) or ("test", file)
            kind = parts[1] if len(parts) > 2 else ""
            kinds.append(NORMAL_KIND if kind in NORMAL_FOLDERS else kind)
        out.kinds = kinds if all(kinds) else None
    return out
