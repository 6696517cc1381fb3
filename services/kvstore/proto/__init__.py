"""Generated gRPC modules for kvstore.proto (see kvstore.protogen)."""
