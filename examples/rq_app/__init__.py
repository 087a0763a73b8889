"""An RQ app that runs unchanged on pprunner's persistent horses (see README.md here)."""
