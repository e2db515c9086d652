"""What a layer costs on this machine: measured Conv timings and their cache."""
