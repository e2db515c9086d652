"""One layer's plan, in plain numpy: kernel scores, clustering, the group count, the bias
compensation and the quality estimate. Knows nothing of ONNX.
"""
