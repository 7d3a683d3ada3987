"""velodash dashboard: Dash pages over a results AnnData written by `core`."""
