"""The declarative point catalog (no I/O): what every sensor model exposes, and where."""
