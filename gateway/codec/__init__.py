"""Pure decoders and encoders for the sensors' payloads; no I/O, never raise on bad input."""
