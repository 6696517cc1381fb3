"""The committed gRPC modules are exactly what kvstore.proto generates."""

from kvstore import protogen


def test_regenerating_the_stubs_changes_nothing() -> None:
    assert protogen.check() == []


def test_generated_modules_import_inside_the_package() -> None:
    text = (protogen.PROTO_DIR / "kvstore_pb2_grpc.py").read_text()
    assert "from . import kvstore_pb2" in text
    assert "\nimport kvstore_pb2" not in text
