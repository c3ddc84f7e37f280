"""Generated protobuf and gRPC code for protos/*.proto. Regenerate with `python scripts/gen_protos.py`."""
