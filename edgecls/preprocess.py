"""Image decoding and resizing shared by training, calibration, evaluation, runtime and camera.

Models take RGB pixels as float32 in 0..255 (normalisation is a layer inside the model), so the
only steps outside it are: decode -> RGB uint8 -> centre crop -> resize. numpy, Pillow and OpenCV.

`resize` is the ONE resize: training, calibration, export validation, predict, the API and the camera
all call it, so a model sees the same pixels in training and in deployment. It centre-crops to the
model's aspect ratio, then
- shrinking (the crop is at least the model's size, e.g. a camera frame): an integer box pre-shrink
  by k = floor(factor), or one more when that would leave more than 1.5 (1.875 -> 2), with OpenCV's
  INTER_AREA (exact averages of k x k blocks; the crop is trimmed symmetrically to a multiple of k:
  nothing for 640x480, 1280x720 or 1920x1080 frames to 224 or 96 px at crop 1.0, else fewer than k
  source pixels, less than half an output pixel), then the named filter for what is left (a factor
  within 3/4..3/2, where OpenCV's filters, which do not widen when shrinking, stay close to Pillow's):
  bicubic -> INTER_CUBIC, bilinear -> INTER_LINEAR_EXACT, area -> INTER_AREA, nearest ->
  INTER_NEAREST_EXACT (no pre-shrink). A 640x480 frame to 224x224 costs ~0.3 ms instead of Pillow's
  ~2 ms, within a mean 0.9-1.6 (of 255) of Pillow bicubic (bench/preprocess_resize.py).
- enlarging (e.g. 28x28 Fashion-MNIST to 96x96): Pillow's filter of the same name, as before, so
  models trained on small images see the pixels they were always trained on.
"""
from __future__ import annotations

import hashlib
import io
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edgecls.errors import ImageError, MissingDependencyError, require
from edgecls.meta import ModelMeta

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
MAX_PIXELS = 64_000_000  # refuse decompression bombs before allocating them

_INTERPOLATION = {  # one resampler per name in meta.INTERPOLATIONS (test_meta_checks.py holds them equal): enlarging
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}
_SHRINK = {  # the same names when shrinking: OpenCV flags (after the integer INTER_AREA pre-shrink)
    "bicubic": "INTER_CUBIC",
    "bilinear": "INTER_LINEAR_EXACT",
    "nearest": "INTER_NEAREST_EXACT",
    "area": "INTER_AREA",
}
_cv2: Any = None

ImageFile.LOAD_TRUNCATED_IMAGES = False


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, RGBA, I;16, CMYK, ...) to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


READ_ONCE_BYTES = 64 * 1024**2  # load_image_and_digest reads a file up to this size once, for decoding and hashing


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3), honouring EXIF orientation.

    Raises ImageError for missing, empty, truncated, non-image or oversized files.
    """
    return _load(Path(path), hashed=False)[0]


def load_image_and_digest(path: str | Path) -> tuple[np.ndarray, str]:
    """`load_image` plus the sha256 of the file's bytes, from one read of a file up to READ_ONCE_BYTES (training
    verifies, decodes and finds duplicates in one pass); a larger one is decoded from disk, then hashed in chunks."""
    image, digest = _load(Path(path), hashed=True)
    assert digest is not None
    return image, digest


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks (OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path, hashed: bool) -> tuple[np.ndarray, str | None]:
    """load_image, and with `hashed` the file's sha256: from the bytes read once when the file is at most
    READ_ONCE_BYTES (a file of gigabytes named .jpg never sits in memory: it is decoded from disk, failing at its header)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):  # opening a FIFO would block forever
            raise ImageError(f"'{path}' is not a regular file (a pipe, socket or device)", "Pass image files")
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:
            raise ImageError(f"'{path}' is empty (0 bytes)", "Remove or replace the file")
        if not hashed:
            return _decode(path, f"'{path}'"), None
        with open(path, "rb") as handle:
            data = handle.read(READ_ONCE_BYTES + 1)  # bounded, even if the file grew since stat
        if len(data) > READ_ONCE_BYTES:
            return _decode(path, f"'{path}'"), file_sha256(path)
        return _decode(io.BytesIO(data), f"'{path}'", file_bytes=True), hashlib.sha256(data).hexdigest()
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"image '{path}' does not exist", "Check the path") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"'{path}' is a folder, not an image", "Pass image files") from exc
    except PermissionError as exc:
        raise ImageError(f"image '{path}' is not readable (permission denied)", "Fix its permissions") from exc


def decode_image(data: bytes, name: str = "the image") -> np.ndarray:
    """`load_image` for bytes in memory (an upload): the same decoder, limits and errors, naming `name`."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)", "Send the image file's bytes")
    return _decode(io.BytesIO(data), name, "Send a JPEG, PNG, BMP, WebP or GIF image")


def _decode(source: Path | io.BytesIO, name: str, fix: str = "Remove or replace the file", file_bytes: bool = False) -> np.ndarray:
    """Decode with Pillow: first frame, EXIF orientation, any mode to RGB uint8; bombs and broken files as ImageError.
    `file_bytes`: `source` holds the bytes of the file `name`, and errors read as if the file had been opened."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"{name} is {width}x{height} pixels, over the {MAX_PIXELS:,} pixel limit",
                                     "Downscale the image before using it")
                image.seek(0)  # first frame of animations
                image.load()
                rgb = _to_rgb(ImageOps.exif_transpose(image) or image)
    except (ImageError, FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name} is a decompression bomb ({exc})", "Downscale the image before using it") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        detail: object = exc
        if isinstance(source, io.BytesIO) and isinstance(exc, UnidentifiedImageError):
            detail = f"cannot identify image file {name}" if file_bytes else "no image format Pillow knows"
        raise ImageError(f"{name} is not a readable image ({type(exc).__name__}: {detail})", fix) from exc
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(f"{name} has no pixels", fix)
    return np.asarray(rgb, dtype=np.uint8)


def centre_crop_box(width: int, height: int, target_w: int, target_h: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """The largest centred box with the target's aspect ratio, scaled by crop_fraction."""
    aspect = target_w / target_h
    crop_w, crop_h = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    crop_w, crop_h = crop_w * crop_fraction, crop_h * crop_fraction
    left = (width - crop_w) / 2
    top = (height - crop_h) / 2
    return (round(left), round(top), round(left + crop_w), round(top + crop_h))


def resize(image: np.ndarray, size: tuple[int, int], crop_fraction: float = 1.0, interpolation: str = "bicubic") -> np.ndarray:
    """Centre-crop an RGB (or BGR: channels are independent) uint8 array to the target aspect ratio, then resize to
    (height, width): OpenCV with an integer pre-shrink when shrinking, Pillow when enlarging (module docstring)."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    height, width = image.shape[:2]
    target_h, target_w = size
    box = centre_crop_box(width, height, target_w, target_h, crop_fraction)
    if box == (0, 0, width, height) and (width, height) == (target_w, target_h):
        return np.ascontiguousarray(image)
    left, top, right, bottom = box
    if right - left >= target_w and bottom - top >= target_h:
        return shrink(image[top:bottom, left:right], (target_h, target_w), interpolation)
    pil = Image.fromarray(np.ascontiguousarray(image))
    resample = _INTERPOLATION.get(interpolation, Image.Resampling.BICUBIC)
    return np.asarray(pil.resize((target_w, target_h), resample=resample, box=box), dtype=np.uint8)


def shrink(crop: np.ndarray, size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """Resize an (H, W, 3) uint8 array at least `size` (height, width) down to it: k x k block averages for the
    integer part of the factor, then `interpolation` for the rest (OpenCV; see the module docstring)."""
    cv2 = _opencv()
    target_h, target_w = size
    height, width = crop.shape[:2]
    scale = min(height / target_h, width / target_w)
    factor = int(scale) + (scale / int(scale) > 1.5)  # what is left for the filter stays within 3/4..3/2
    if interpolation != "nearest" and factor >= 2:
        keep_h, keep_w = height // factor * factor, width // factor * factor
        top, left = (height - keep_h) // 2, (width - keep_w) // 2  # trim symmetrically: the centre stays the centre
        crop = cv2.resize(crop[top : top + keep_h, left : left + keep_w], (keep_w // factor, keep_h // factor),
                          interpolation=cv2.INTER_AREA)
    if crop.shape[:2] != (target_h, target_w):
        crop = cv2.resize(crop, (target_w, target_h), interpolation=getattr(cv2, _SHRINK.get(interpolation, "INTER_CUBIC")))
    return np.ascontiguousarray(crop)


def _opencv() -> Any:
    """OpenCV, imported once; its own thread pool is limited to one thread (a frame is too small to split, and the
    cores belong to inference and to training's parallel decoding)."""
    global _cv2
    if _cv2 is None:
        cv2 = require("cv2", "pi")
        cv2.setNumThreads(1)
        _cv2 = cv2
    return _cv2


def prepare_pixels(image: np.ndarray | str | Path, meta: ModelMeta, bgr: bool = False) -> np.ndarray:
    """A path or an RGB (BGR with bgr=True) uint8 array as the model's uint8 pixels (H, W, 3), in the
    channel order meta.color_order names (RGB for every edgecls model)."""
    array = load_image(image) if isinstance(image, (str, Path)) else image
    array = resize(array, meta.input_size, meta.crop_fraction, meta.interpolation)
    # Resizing works per channel, so swapping channels after it gives the same pixels at a fraction
    # of the cost (a reversed-stride copy of a full camera frame costs more than the resize).
    return swap_channels(array) if bgr != (meta.color_order == "BGR") else array


def swap_channels(array: np.ndarray) -> np.ndarray:
    """RGB <-> BGR of a uint8 (H, W, 3) array as a new contiguous array (OpenCV's SIMD copy; numpy's reversed-stride copy
    is several times slower, and gives the same bytes where OpenCV is missing)."""
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        try:
            cv2 = _opencv()
        except MissingDependencyError:
            cv2 = None
        if cv2 is not None:
            return cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(array[..., ::-1])


def prepare(image: np.ndarray | str | Path, meta: ModelMeta, bgr: bool = False) -> np.ndarray:
    """Turn a path or an RGB (or BGR with bgr=True) uint8 array into the model's float32 input (H, W, 3)."""
    array = prepare_pixels(image, meta, bgr).astype(np.float32)
    if not meta.normalization_baked_in:
        array -= np.asarray(meta.mean, np.float32)
        array /= np.asarray(meta.std, np.float32)
    return array


def load_for_model(path: str | Path, size: tuple[int, int], crop_fraction: float = 1.0, interpolation: str = "bicubic") -> np.ndarray:
    """Decode and resize one file to a uint8 (H, W, 3) array: the step that training and runtime share."""
    return resize(load_image(path), size, crop_fraction, interpolation)


def load_for_model_and_digest(path: str | Path, size: tuple[int, int], crop_fraction: float = 1.0,
                              interpolation: str = "bicubic") -> tuple[np.ndarray, str]:
    """`load_for_model` plus the sha256 of the file's bytes, from one read of the file."""
    image, digest = load_image_and_digest(path)
    return resize(image, size, crop_fraction, interpolation), digest
