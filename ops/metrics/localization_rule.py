"""When a phrase counts as localized: its chosen box has IoU ≥ :data:`IOU_THRESHOLD` with the
phrase's ground-truth (union) box. The one declaration every stage reads: validation and test
evaluation (through the training setting ``localization_iou``, whose default this is),
grounding accuracy, the proposals' upper bound and the chance level. Torch-free, so that the
settings models can read it."""

# The paper's (and Flickr30K Entities') accuracy criterion.
IOU_THRESHOLD = 0.5
