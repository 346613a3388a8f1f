"""A tiny FracAtlas-like release built in a temporary folder, with known geometry and known defects.

Fractured images are dark with one bright rectangle, annotated by a polygon on exactly that rectangle, so a
correctly aligned canonical mask covers bright pixels. IMG0000003 is stored rotated with EXIF orientation 6
(annotated in the displayed frame, like IMG0002628 in the release); IMG0000102 is a truncated JPEG;
IMG0000005's dataset.csv row says not fractured although it is in images/Fractured.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

W, H = 80, 60  # displayed size of every image (landscape)
SPLIT = {
    "IMG0000000": "train",
    "IMG0000001": "train",
    "IMG0000002": "train",
    "IMG0000003": "valid",
    "IMG0000004": "valid",
    "IMG0000005": "test",
}
NON_FRACTURED = [f"IMG00001{i:02d}" for i in range(8)]
EXIF_ID, TRUNCATED_ID, CSV_MISMATCH_ID = "IMG0000003", "IMG0000102", "IMG0000005"


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    def polygon(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y0, self.x1, self.y1, self.x0, self.y1]


def box_of(i: int) -> Box:
    return Box(10 + 5 * i, 8 + 3 * i, 34 + 5 * i, 30 + 3 * i)


def _jpeg(im: Image.Image, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def make_release(root: Path) -> Path:
    fr, nf = root / "images" / "Fractured", root / "images" / "Non_fractured"
    fr.mkdir(parents=True)
    nf.mkdir(parents=True)
    coco = {"info": {}, "images": [], "annotations": [], "categories": [{"id": 0, "name": "fractured"}]}
    rows = []
    for i, image_id in enumerate(SPLIT):
        shown = Image.new("L", (W, H), 20)
        b = box_of(i)
        ImageDraw.Draw(shown).rectangle([b.x0, b.y0, b.x1 - 1, b.y1 - 1], fill=235)
        if image_id == EXIF_ID:
            # Stored so that applying orientation 6 (rotate 90 degrees clockwise) gives the displayed image.
            data = _jpeg(shown.transpose(Image.Transpose.ROTATE_90), orientation=6)
        else:
            data = _jpeg(shown)
        (fr / f"{image_id}.jpg").write_bytes(data)
        coco["images"].append({"id": i + 1, "width": W, "height": H, "file_name": f"{image_id}.jpg"})
        coco["annotations"].append(
            {"id": i, "image_id": i + 1, "category_id": 0, "iscrowd": 0, "segmentation": [b.polygon()]}
        )
        rows.append((image_id, 0 if image_id == CSV_MISMATCH_ID else 1, 1))
    for image_id in NON_FRACTURED:
        data = _jpeg(Image.new("L", (W, H), 60))
        if image_id == TRUNCATED_ID:
            data = data[: len(data) * 2 // 3]
        (nf / f"{image_id}.jpg").write_bytes(data)
        rows.append((image_id, 0, 0))
    with open(root / "dataset.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "image_id",
                "hand",
                "leg",
                "hip",
                "shoulder",
                "mixed",
                "hardware",
                "multiscan",
                "fractured",
                "fracture_count",
                "frontal",
                "lateral",
                "oblique",
            ]
        )
        for k, (image_id, fractured, count) in enumerate(rows):
            w.writerow(
                [
                    f"{image_id}.jpg",
                    int(k % 4 == 0),
                    int(k % 4 == 1),
                    int(k % 4 == 2),
                    int(k % 4 == 3),
                    0,
                    int(k == 1),
                    0,
                    fractured,
                    count,
                    1,
                    int(k % 2),
                    0,
                ]
            )
    ann = root / "Annotations" / "COCO JSON"
    ann.mkdir(parents=True)
    (ann / "COCO_fracture_masks.json").write_text(json.dumps(coco))
    split_dir = root / "Utilities" / "Fracture Split"
    split_dir.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        ids = [k for k, v in SPLIT.items() if v == split]
        (split_dir / f"{split}.csv").write_text("image_id\n" + "".join(f"{k}.jpg\n" for k in ids))
    return root
