"""The commissioning web page, served by the gateway's own HTTP server (see `gateway.web.ui`)."""

from gateway.web.ui import WebUi

__all__ = ["WebUi"]
