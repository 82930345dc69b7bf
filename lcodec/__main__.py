"""``python -m lcodec`` runs the command-line interface."""
from .cli import main

main()
