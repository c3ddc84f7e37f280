"""Transports: gRPC servicers, the HTTP front end (api/http), proto/JSON ⇄ domain codecs, error statuses."""
