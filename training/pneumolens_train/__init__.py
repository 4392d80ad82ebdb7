"""pneumolens training package: data, models, training, calibration and ONNX export."""

__version__ = "0.1.0"
