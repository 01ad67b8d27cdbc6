"""The default ``synthetic`` dataset: seeded scenes of coloured shapes with phrase boxes.

Everything is written in the formats of the public datasets so that the default run goes
through the same loaders as real data:

- ``images/<id>.jpg`` (JPEG);
- ``dataset_synthetic.json``: Karpathy-style captions and splits (image root ``images/``);
- ``Sentences/<id>.txt``: Flickr30K Entities phrase markup, one caption per line, in the
  JSON's order; the markup-stripped line equals the JSON ``raw`` caption;
- ``Annotations/<id>.xml``: Flickr30K Entities PASCAL-VOC-like boxes (1-based, inclusive).

Chain ids are per image: shape ``k`` (0-based) is chain ``k + 1``, the background is chain
``n_shapes + 1``, phrases about several shapes ("two red shapes") get the next ids and every
member's ``<object>`` lists them as extra ``<name>``s, as real annotations do.

Each image draws from its own generator seeded by ``(seed, index)``, so the output is the
same byte for byte for a given seed (JPEG bytes for a given Pillow version).

Modules: ``scenes`` samples and draws the shapes, ``captions`` is the caption grammar,
``annotations`` writes the boxes as Entities XML and ``writer`` puts the dataset on disk.
"""
