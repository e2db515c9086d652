"""onnxruntime: sessions, running in parts, seeded inputs, side-by-side timing, quantization."""
