"""gRPC servicers (thin) and interceptors of the coordinator."""
