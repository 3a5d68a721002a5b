"""Where keras.applications keeps the ImageNet weights it downloads, and an offline check. No TensorFlow here.

keras.applications fetches `<cache>/models/<file>` from storage.googleapis.com the first time a backbone is
built with weights="imagenet"; offline that ends in Keras' "URL fetch failure" traceback. `check_available`
looks in the cache first and fails fast, before any training work, when the file is absent and the host
cannot be reached; `download_failed` turns a failure inside Keras into the same one-line error.
"""
from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from edgecls.errors import ModelError, WeightsUnavailableError

ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
HOST = "storage.googleapis.com"
PROBE_SECONDS = 5.0
OFFLINE_CHOICES = "--model efficientnet_lite0/1/2 (ImageNet weights ship as pip packages) or --weights none"

# keras.applications' file names for include_top=False (keras/src/applications/*.py).
_NO_TOP_FILES = {
    "EfficientNetB0": "efficientnetb0_notop.h5",
    "ResNet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "DenseNet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "InceptionV3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "VGG16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
_MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)
_MOBILENET_V3_ALPHAS = (0.75, 1.0)
_MOBILENET_V3_MINIMALISTIC_ALPHAS = (1.0,)


def weights_file(constructor: str, input_size: tuple[int, int], alpha: float | None, minimalistic: bool = False) -> str | None:
    """The file Keras downloads for `constructor` without its top, or None where Keras has no such weights
    (then Keras' own ValueError names the problem). `minimalistic`: MobileNetV3's variant without hard-swish/SE."""
    width = 1.0 if alpha is None else float(alpha)
    if constructor == "MobileNetV2":
        if width not in _MOBILENET_V2_ALPHAS:
            return None
        height, columns = input_size
        rows = height if height == columns and height in _MOBILENET_V2_ROWS else 224  # Keras' fallback, with a warning
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{width}_{rows}_no_top.h5"
    if constructor in ("MobileNetV3Small", "MobileNetV3Large"):
        if width not in (_MOBILENET_V3_MINIMALISTIC_ALPHAS if minimalistic else _MOBILENET_V3_ALPHAS):
            return None
        kind = ("small" if constructor == "MobileNetV3Small" else "large") + ("_minimalistic" if minimalistic else "")
        return f"weights_mobilenet_v3_{kind}_224_{width}_float_no_top_v2.h5"
    return _NO_TOP_FILES.get(constructor)


def cache_dir() -> Path:
    """The folder keras.utils.get_file stores application weights in: $KERAS_HOME/models, else ~/.keras/models
    (/tmp/.keras/models where those are not writable), as Keras decides it."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if os.path.isdir(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return Path(home) / "models"


@functools.lru_cache(maxsize=1)
def origin_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the weights host answers (any HTTP status), within `timeout` seconds, DNS included."""
    answered: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(ORIGIN, method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)  # the server answered: downloads can work
        except (OSError, ValueError):
            answered.append(False)

    thread = threading.Thread(target=probe, name="edgecls-weights-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)  # getaddrinfo ignores socket timeouts: bound the whole probe
    return bool(answered and answered[0])


def check_available(backbone: str, constructor: str, input_size: tuple[int, int], alpha: float | None, minimalistic: bool = False) -> None:
    """Raise WeightsUnavailableError when the ImageNet weights are neither cached nor downloadable."""
    name = weights_file(constructor, input_size, alpha, minimalistic)
    if name is None or (cache_dir() / name).is_file() or origin_reachable():
        return
    raise WeightsUnavailableError(
        f"ImageNet weights for {backbone} are not in the Keras cache ('{cache_dir() / name}') and {HOST} cannot be reached",
        _hint(name),
    )


def download_failed(
    backbone: str, constructor: str, input_size: tuple[int, int], alpha: float | None, exc: BaseException, minimalistic: bool = False
) -> ModelError | None:
    """The one-line error for a failure of Keras' weights download or of the cached file, else None."""
    name = weights_file(constructor, input_size, alpha, minimalistic) or f"the {constructor} weights"
    path = cache_dir() / name
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, urllib.error.URLError | TimeoutError) or "URL fetch failure" in text or "corrupted file" in text:
        return WeightsUnavailableError(f"could not download the ImageNet weights for {backbone} into '{path}' ({text[:200]})", _hint(name))
    if isinstance(exc, OSError) and path.is_file():
        return ModelError(
            f"the cached ImageNet weights for {backbone} '{path}' cannot be read ({text[:200]})",
            "Delete that file: Keras downloads it again when online",
        )
    return None


def _hint(name: str) -> str:
    where = "the cache is $KERAS_HOME/models" if "KERAS_HOME" in os.environ else "set KERAS_HOME to use another cache"
    return f"Go online once so Keras downloads it, or copy {name} there ({where}); offline, use {OFFLINE_CHOICES}"
