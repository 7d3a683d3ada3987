"""Data access for the web layer: results files, datasets, selections, gene sets,
projections and exports."""
