"""Policies: each turns what a user asks for (a ratio, a fidelity to keep, a MACs or latency
budget, never slower end to end) into a plan, measuring candidate plans through a
:class:`~onnx_gkp.context.Context`."""
