"""vpnclient: an IKEv2/IPsec remote-access VPN client."""

__version__ = "0.1.0"
