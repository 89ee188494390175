"""Training ERAQUE: typed configs, the frame cache, the (distributed) trainer, evaluation and the CLI.

Importing this package does not import torch; ``gameqa.train.trainer`` does.
"""
