"""gRPC servicers and the proto ⇄ domain codecs. Only this package imports grpc."""
