"""What a run did: the per-layer report, totals, JSON and text, and the HTML plot."""
