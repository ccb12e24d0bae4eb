"""Input and output: reading rasters and vectors with clear errors, atomic outputs, styled COGs."""
