"""Split rule. Fractured images keep the release's official split; non-fractured images are ordered by the
sha256 of their image id and cut in the official proportions (train, then valid, then test).

The rule runs over every non-fractured file of the release, before exclusions, so an excluded image never
moves another one to a different split. The benchmark evaluates on "eval" = valid + test.
"""

from __future__ import annotations

import hashlib

from .source import SPLITS

EVAL = ("valid", "test")
SPLIT_NAMES = ("train", "valid", "test", "eval", "all")


def id_key(image_id: str) -> str:
    return hashlib.sha256(image_id.encode("utf-8")).hexdigest()


def cut_counts(n: int, official: dict[str, int]) -> dict[str, int]:
    """Sizes of train/valid/test for n images in the official proportions (test takes the remainder)."""
    total = sum(official[s] for s in SPLITS)
    train = round(n * official["train"] / total)
    valid = round(n * official["valid"] / total)
    return {"train": train, "valid": valid, "test": n - train - valid}


def assign_non_fractured(image_ids: list[str], official: dict[str, int]) -> dict[str, str]:
    ordered = sorted(image_ids, key=id_key)
    sizes = cut_counts(len(ordered), official)
    out, start = {}, 0
    for split in SPLITS:
        for image_id in ordered[start : start + sizes[split]]:
            out[image_id] = split
        start += sizes[split]
    return out


def in_split(row_split: str, split: str) -> bool:
    if split == "all":
        return True
    if split == "eval":
        return row_split in EVAL
    return row_split == split
