"""Generate the Python gRPC stubs from ``proto/`` (run ``make proto``).

The generated files are committed under ``server/grpc_gen/`` so that installing
LiveSPT needs no code generator; ``tests/test_proto.py`` regenerates them into a
temporary directory and fails if they drift from the ``.proto``.

grpc_tools writes absolute imports (``from livespt.v1 import livespt_pb2``) that
only work when the output folder is on ``sys.path``; they are rewritten to the
package path here, in one place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PROTO_FILES = ("livespt/v1/livespt.proto",)
OUT_PACKAGE = "livespt.server.grpc_gen"
DEFAULT_OUT = REPO / "server" / "grpc_gen"


def generate(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Generate ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Root of the generated package (``server/grpc_gen`` for the committed copy).

    Returns
    -------
    list of Path
        The generated files, relative paths under ``out_dir``.
    """
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(PROTO_ROOT / p) for p in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    written = []
    for proto in PROTO_FILES:
        stem = Path(proto).with_suffix("")
        pkg_dir = out_dir / stem.parent
        # Every folder on the way is a package, so `server.grpc_gen.livespt.v1` imports.
        for d in [out_dir, *[out_dir / p for p in stem.parent.parents if str(p) != "."],
                  pkg_dir]:
            (d / "__init__.py").touch()
        dotted = ".".join(stem.parent.parts)
        grpc_file = pkg_dir / f"{stem.name}_pb2_grpc.py"
        text = grpc_file.read_text()
        text = text.replace(f"from {dotted} import", f"from {OUT_PACKAGE}.{dotted} import")
        grpc_file.write_text(text)
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            written.append((pkg_dir / f"{stem.name}{suffix}").relative_to(out_dir))
    return written


def main() -> None:
    """Regenerate the committed stubs (or into ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(args.out / path)


if __name__ == "__main__":
    main()
