"""Searches that produce plans and measure them: uniform, fidelity target, data-free, MACs or
latency budget, input gathers and the end-to-end guard.
"""
