"""Files in and out: models (external data, atomic writes), calibration samples, path checks."""
