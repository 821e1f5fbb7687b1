"""Shrinkray's compression library: model I/O, recipes, the layer-by-layer runner, methods, export, eval."""
