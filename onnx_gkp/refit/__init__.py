"""Pruned layers refitted on calibration data: activations, reconstruction, the ridge solver."""
