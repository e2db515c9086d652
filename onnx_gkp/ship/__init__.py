"""The precision the model ships in: INT8 types chosen and the quantized model."""
