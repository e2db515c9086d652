"""Is the result right: the masked reference, validation against it, fidelity metrics."""
