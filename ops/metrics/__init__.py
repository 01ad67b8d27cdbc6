"""Evaluation metrics: retrieval ranks and recalls, phrase localization accuracy."""
