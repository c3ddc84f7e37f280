"""KServe v2 over HTTP/REST (JSON and Triton's binary tensor data extension), beside gRPC, on aiohttp."""
