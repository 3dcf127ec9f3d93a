"""Runs in a model replica: engine, batcher, window packing, weights, replica core."""
