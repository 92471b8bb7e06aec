"""The data layer, below training, evaluation and serving: what a sample is and how it becomes model input.

- templates.py: a conversation as input ids and labels (labels on the answers only), a prompt as the ids
  generation continues (`--version`).

Importing the package loads nothing: each module is imported by its users.
"""
