"""``python -m geoseg``."""

from geoseg.cli.main import main

main()
