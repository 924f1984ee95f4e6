"""vendedge: the edge controller daemon."""
__version__ = "0.1.0"
