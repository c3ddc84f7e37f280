"""Clients' shared-memory regions (Triton's extension): registration, tensor reads and writes."""
