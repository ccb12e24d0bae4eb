"""The ``geoseg`` command line: thin click commands, each one library call."""
