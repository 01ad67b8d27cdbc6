"""Flickr30K Entities annotation XML of a synthetic scene: its boxes under their chains."""

from __future__ import annotations

from ops.data.synthetic.captions import SceneCaptions
from ops.data.synthetic.scenes import Scene


def annotation_xml(image_id: str, scene: Scene, described: SceneCaptions) -> str:
    """Flickr30K Entities annotation: boxed objects first, then the boxless scene chain."""
    size = scene.image_size
    lines = [
        "<annotation>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<size>",
        f"\t\t<width>{size}</width>",
        f"\t\t<height>{size}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
    ]
    for index, shape in enumerate(scene.shapes):
        names = [index + 1] + [
            chain for members, chain in described.groups.items() if index in members
        ]
        names = [name for name in names if name in described.used_chains]
        if not names:
            continue
        lines.append("\t<object>")
        lines += [f"\t\t<name>{name}</name>" for name in names]
        x0, y0, x1, y1 = shape.box
        lines += [
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0 + 1}</xmin>",
            f"\t\t\t<ymin>{y0 + 1}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    scene_chain = len(scene.shapes) + 1
    if scene_chain in described.used_chains:
        lines += [
            "\t<object>",
            f"\t\t<name>{scene_chain}</name>",
            "\t\t<scene>1</scene>",
            "\t\t<nobndbox>1</nobndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines)
