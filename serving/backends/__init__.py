"""Backends: running a batch on a device. See base.py for the interface."""
