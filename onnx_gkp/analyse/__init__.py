"""What the model is: the prunable Conv sites and why the others are left, the op table, shapes,
BatchNorm statistics, expected activations and how errors grow to the outputs.
"""
