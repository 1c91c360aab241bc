"""Datasets: cases, tiling, TFRecord shards."""

MAX_TILE = 4096  # px: the largest tile or window; larger is a typo (a 100000 px window asks for 37 GiB)
