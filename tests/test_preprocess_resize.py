"""The ONE resize (edgecls.preprocess.resize): what it computes when shrinking (integer box pre-shrink, then the named
filter, OpenCV) and when enlarging (Pillow, unchanged), on real photos and on exact synthetic patterns. No timing asserts:
the speed is measured by bench/preprocess_resize.py."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecls.meta import ModelMeta
from edgecls.preprocess import centre_crop_box, prepare, prepare_pixels, resize, shrink

cv2 = pytest.importorskip("cv2")


def photo(size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A real photo (scikit-image's astronaut) as an RGB uint8 frame of `size` (width, height)."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(cv2.resize(data.astronaut(), size, interpolation=cv2.INTER_AREA))


def pillow_bicubic(image: np.ndarray, size: tuple[int, int], crop: float = 1.0) -> np.ndarray:
    """What resize() computed before: Pillow bicubic over the centre-crop box."""
    height, width = image.shape[:2]
    box = centre_crop_box(width, height, size[1], size[0], crop)
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BICUBIC, box=box))


@pytest.mark.parametrize(("frame", "size", "crop"), [
    ((640, 480), (224, 224), 1.0), ((640, 480), (96, 96), 1.0), ((320, 240), (224, 224), 1.0), ((1280, 720), (224, 224), 0.875),
    ((640, 480), (192, 256), 1.0), ((1920, 1080), (224, 224), 1.0), ((224, 224), (224, 224), 1.0), ((225, 224), (224, 224), 1.0),
])
def test_shrinking_stays_close_to_pillow_bicubic(frame: tuple[int, int], size: tuple[int, int], crop: float) -> None:
    image = photo(frame)
    got = resize(image, size, crop, "bicubic")
    want = pillow_bicubic(image, size, crop)
    assert got.shape == (*size, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.mean() < 2.5 and diff.max() <= 64, (diff.mean(), diff.max())  # measured: mean 0.9-1.6 of 255, max 25-36


def test_the_pre_shrink_averages_k_by_k_blocks() -> None:
    rng = np.random.default_rng(0)
    for factor in (2, 3, 4, 5):
        image = rng.integers(0, 256, (24 * factor, 32 * factor, 3), dtype=np.uint8)
        got = resize(image, (24, 32), 1.0, "bicubic")  # an exact integer factor: the pre-shrink alone
        blocks = image.reshape(24, factor, 32, factor, 3).mean(axis=(1, 3))
        assert np.abs(got - blocks).max() <= 0.5 + 1e-9, factor  # the rounded block mean (ties either way)


def test_enlarging_is_pillow_as_before() -> None:
    """Small images (Fashion-MNIST is 28x28) are enlarged by Pillow exactly as before: models trained on them see the same pixels."""
    small = photo((28, 28))
    for name, resample in (("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR),
                           ("nearest", Image.Resampling.NEAREST), ("area", Image.Resampling.BOX)):
        want = np.asarray(Image.fromarray(small).resize((96, 96), resample, box=(0, 0, 28, 28)))
        assert np.array_equal(resize(small, (96, 96), 1.0, name), want), name


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest", "area"])
def test_every_interpolation_shrinks_symmetrically(interpolation: str) -> None:
    image = photo((644, 482))  # the crop (482) is trimmed by 17 pixels on each side to 4 x 112
    got = resize(image, (112, 112), 1.0, interpolation)
    mirrored = resize(np.ascontiguousarray(image[:, ::-1]), (112, 112), 1.0, interpolation)[:, ::-1]
    assert got.shape == (112, 112, 3) and np.abs(got.astype(int) - mirrored.astype(int)).max() <= 1


def test_channels_are_independent_so_bgr_frames_give_the_same_pixels() -> None:
    rgb = photo()
    meta = ModelMeta("m", (224, 224), ["a", "b"])
    from_bgr = prepare_pixels(np.ascontiguousarray(rgb[..., ::-1]), meta, bgr=True)
    assert np.array_equal(from_bgr, resize(rgb, (224, 224), 1.0, meta.interpolation))
    assert np.array_equal(prepare(rgb, meta), from_bgr.astype(np.float32))


def test_odd_sizes_shift_by_less_than_half_an_output_pixel() -> None:
    """481x333 to 97x131: k = 3 leaves one source column over on each side of the 449 wide crop (trimmed), the rest is sub-pixel."""
    image = photo((481, 333))
    got = resize(image, (97, 131), 1.0, "bicubic")
    shifted = pillow_bicubic(image, (97, 131))
    assert got.shape == (97, 131, 3) and np.abs(got.astype(int) - shifted.astype(int)).mean() < 4


def test_views_and_grey_images() -> None:
    frame = photo((800, 600))
    view = frame[50:530, 80:720]  # not contiguous: a camera frame's crop
    assert np.array_equal(resize(view, (96, 96)), resize(np.ascontiguousarray(view), (96, 96)))
    grey = np.ascontiguousarray(frame[..., 0])
    out = resize(grey, (64, 64))
    assert out.shape == (64, 64, 3) and np.array_equal(out[..., 0], out[..., 2])
    assert np.array_equal(shrink(np.zeros((10, 10, 3), np.uint8), (10, 10)), np.zeros((10, 10, 3), np.uint8))
