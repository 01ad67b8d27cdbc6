"""Evaluation of trained networks on the test split: retrieval (single- and two-stage, ECCV
Caption) and phrase localization, stored in the result tables."""
