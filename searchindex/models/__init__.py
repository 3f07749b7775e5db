"""Models: model resolution, image and text encoders (torch, int8, ONNX), tokenizer, pixels, captioners.

Also holds the shipped ``tiny-shapes`` model (``models/tiny-shapes/``).
"""
