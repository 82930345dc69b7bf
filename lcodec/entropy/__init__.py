"""Entropy coding of integer symbols with fixed probability tables (numpy + constriction).

Nothing here imports torch: the tables are plain integer arrays built once at export time
(:mod:`.tables`) and stored with the weights, and :mod:`.coder` drives constriction's range
coder with them, so encoder and decoder feed constriction bit-identical models.
"""
from .coder import StreamDecoder, StreamEncoder
from .tables import TableSet

__all__ = ["StreamDecoder", "StreamEncoder", "TableSet"]
