"""`--frontends N`: front-end processes on one port, their model worker link and shared-memory slots."""
