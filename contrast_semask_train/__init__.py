"""Offline tooling for contrast_semask: model, data, losses, training, evaluation and export.

Importing this package pulls in nothing heavy; `contrast_semask_train.model` needs torch only.
"""
