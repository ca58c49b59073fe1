"""The one root exception type; every error the gateway raises on purpose derives from it."""


class GatewayError(Exception):
    """Base of every error the gateway raises deliberately."""


class ConfigError(GatewayError):
    """A configuration value is missing, malformed or inconsistent."""


class EncodeError(GatewayError):
    """A downlink command cannot be encoded (unknown command, value out of range)."""


class EnvelopeError(GatewayError):
    """A network-server message cannot be unwrapped (not JSON, missing device id, bad base64)."""
