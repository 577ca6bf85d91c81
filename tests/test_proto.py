"""The committed gRPC stubs match the ``.proto`` they were generated from."""

from __future__ import annotations

from pathlib import Path

from livespt.server import protogen


def test_committed_stubs_do_not_drift_from_the_proto(tmp_path: Path) -> None:
    generated = protogen.generate(tmp_path)
    assert generated, "nothing generated"
    for rel in generated:
        committed = protogen.DEFAULT_OUT / rel
        assert committed.exists(), f"{committed} missing: run `make proto`"
        assert committed.read_text() == (tmp_path / rel).read_text(), (
            f"{committed} differs from what proto/ generates: run `make proto` and commit"
        )


def test_stubs_import_from_the_package() -> None:
    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2, livespt_pb2_grpc

    assert livespt_pb2.DESCRIPTOR.package == "livespt.v1"
    assert hasattr(livespt_pb2_grpc, "LiveSptServicer")
