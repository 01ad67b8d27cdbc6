"""Small custom datasets on disk (Karpathy JSON, JPEGs, optional Entities files) to break."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

SPLITS = ["train", "train", "train", "val", "test", "test"]


def write_custom_dataset(
    folder: Path,
    captions: dict[int, list[str]] | None = None,
    entities: bool = False,
    size: tuple[int, int] = (40, 30),
) -> Path:
    """Six images (train ×3, val, test ×2), one caption each unless ``captions`` says
    otherwise; with ``entities``, Flickr30K Entities Sentences/ and Annotations/ too."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    sentence_id = 0
    for i, split in enumerate(SPLITS):
        name = f"im{i}.jpg"
        Image.new("RGB", size, (40 * i, 90, 10)).save(folder / "img" / name, "JPEG")
        texts = (captions or {}).get(i, [f"a red box number {i}"])
        sentences = []
        for text in texts:
            sentences.append(
                {"raw": text, "tokens": text.split(), "imgid": i, "sentid": sentence_id}
            )
            sentence_id += 1
        records.append(
            {
                "filename": name,
                "filepath": "img",
                "imgid": i,
                "split": split,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )
        if entities:
            (folder / "Sentences").mkdir(exist_ok=True)
            (folder / "Annotations").mkdir(exist_ok=True)
            (folder / "Sentences" / f"im{i}.txt").write_text(
                "\n".join(t.replace("a red box", "[/EN#1/other a red box]", 1) for t in texts)
                + "\n"
            )
            (folder / "Annotations" / f"im{i}.xml").write_text(
                f"<annotation><filename>{name}</filename><size><width>{size[0]}</width>"
                f"<height>{size[1]}</height><depth>3</depth></size><object><name>1</name>"
                "<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>22</ymax></bndbox>"
                "</object></annotation>"
            )
    (folder / "data.json").write_text(json.dumps({"images": records}))
    return folder
