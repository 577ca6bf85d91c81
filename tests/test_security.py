"""TLS, mutual TLS and bearer tokens on a real server, from Python, the command line and Node.

Certificates are made here with the ``openssl`` command (a CA, a server certificate for
127.0.0.1/localhost, a client certificate). The Node client uses ``@grpc/grpc-js`` and
``@grpc/proto-loader`` from npm, installed into ``~/.cache/livespt/node`` on first use; it
is skipped with a reason where node/npm or the registry is missing (a failure under CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
import tifffile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_helpers import background_frames, config

from livespt.server.cli.main import main
from livespt.server.client import LiveSptClient, StreamSettings
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.service.app import EmbeddedServer, ServerOptions
from livespt.server.service.security import (
    TlsFiles,
    TokenAuth,
    check_exposure,
    is_loopback,
    load_tokens,
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-for-tests-0123456789"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=LiveSPT test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *ext, cwd=d)
    (d / "tokens.txt").write_text(f"# LiveSPT tokens\n{TOKEN}\n\nanother-token-abcdefghij\n")
    return d


def start(tmp: Path, pki: Path, mutual: bool = False, reflection: bool = True) -> EmbeddedServer:
    tls = TlsFiles(pki / "server.pem", pki / "server.key",
                   pki / "ca.pem" if mutual else None)
    return EmbeddedServer(ServerOptions(
        port=0, out_root=tmp, device="cpu", models=(), detect_workers=0, tls=tls,
        tokens=load_tokens(pki / "tokens.txt"), reflection=reflection)).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Path):
    srv = start(tmp_path_factory.mktemp("sessions"), pki)
    yield srv
    srv.stop()


def tls_channel(pki: Path, target: str, cert: bool = False) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / "client.key").read_bytes() if cert else None,
        (pki / "client.pem").read_bytes() if cert else None)
    return grpc.secure_channel(target, creds)


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_calls_without_a_valid_token_are_unauthenticated_but_health_answers(server, pki):
    channel = tls_channel(pki, server.target)
    stub = pb_grpc.LiveSptStub(channel)
    bad = [("authorization", "Bearer wrong-token-0123456789")]
    for metadata in (None, bad, [("authorization", TOKEN)]):  # none, wrong, not "Bearer"
        assert code_of(lambda m=metadata: stub.GetServerInfo(
            pb.GetServerInfoRequest(), timeout=10, metadata=m)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda m=metadata: stub.AnalyzeTracks(
            pb.AnalyzeTracksRequest(), timeout=10, metadata=m)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda m=metadata: list(stub.StreamFrames(
            iter([pb.StreamRequest(config=config())]), timeout=10, metadata=m))
        ) == grpc.StatusCode.UNAUTHENTICATED
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    assert code_of(lambda: list(refl.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    ) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert "authorization: Bearer" in err.value.details()
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="livespt.v1.LiveSpt"),
                        timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    # The second token of the file is as good as the first.
    info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10,
                              metadata=[("authorization", "Bearer another-token-abcdefghij")])
    assert info.version
    channel.close()


def test_plaintext_to_a_tls_port_fails(server) -> None:
    channel = grpc.insecure_channel(server.target)
    code = code_of(lambda: pb_grpc.LiveSptStub(channel).GetServerInfo(
        pb.GetServerInfoRequest(), timeout=5,
        metadata=[("authorization", f"Bearer {TOKEN}")]))
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    channel.close()


def test_a_tls_client_with_the_ca_and_a_token_streams(server, pki) -> None:
    frames = list(background_frames(12, 48, 48))
    with LiveSptClient(server.target, tls_ca=pki / "ca.pem", token=TOKEN) as client:
        client.wait_ready(timeout_s=10)
        assert client.info().version
        result = client.stream(frames, StreamSettings(pixel_size_um=0.1,
                                                      frame_interval_s=0.05))
    assert result.frames_acked == 12 and result.summary is not None


def test_the_command_line_streams_over_tls_with_a_token(server, pki, tmp_path: Path,
                                                        capsys) -> None:
    movie = tmp_path / "m.tif"
    tifffile.imwrite(movie, np.stack(list(background_frames(8, 48, 48))), imagej=True,
                     resolution=(10.0, 10.0), metadata={"unit": "um", "finterval": 0.05})
    common = [str(movie), "--server", server.target, "--exposure", "0.05"]
    assert main(["stream", *common, "--tls-ca", str(pki / "ca.pem"), "--token-file",
                 str(pki / "tokens.txt"), "--out", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["frames_acked"] == 8
    capsys.readouterr()
    assert main(["stream", *common, "--tls-ca", str(pki / "ca.pem"), "--out",
                 str(tmp_path / "no")]) != 0
    err = capsys.readouterr().err.strip()
    assert "UNAUTHENTICATED" in err or "token" in err, err
    assert "Traceback" not in err


def test_mutual_tls_asks_for_a_client_certificate(tmp_path: Path, pki: Path) -> None:
    srv = start(tmp_path, pki, mutual=True, reflection=False)
    try:
        meta = [("authorization", f"Bearer {TOKEN}")]
        without = tls_channel(pki, srv.target)
        assert code_of(lambda: pb_grpc.LiveSptStub(without).GetServerInfo(
            pb.GetServerInfoRequest(), timeout=5, metadata=meta)) == grpc.StatusCode.UNAVAILABLE
        with_cert = tls_channel(pki, srv.target, cert=True)
        assert pb_grpc.LiveSptStub(with_cert).GetServerInfo(
            pb.GetServerInfoRequest(), timeout=10, metadata=meta).version
        # --no-reflection: reflection is not there, even with a token.
        refl = reflection_pb2_grpc.ServerReflectionStub(with_cert)
        assert code_of(lambda: list(refl.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10,
            metadata=meta))) == grpc.StatusCode.UNIMPLEMENTED
        with LiveSptClient(srv.target, tls_ca=pki / "ca.pem", token=TOKEN,
                           tls_cert=pki / "client.pem", tls_key=pki / "client.key") as client:
            assert client.info().version
        without.close()
        with_cert.close()
    finally:
        srv.stop()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("192.168.1.5", False), ("::", False),
    ("example.org", False)])
def test_only_loopback_is_served_without_tls_and_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) == loopback
    if loopback:
        assert check_exposure(host, False, False, False) is None
        return
    with pytest.raises(ValueError, match=r"--tls-cert, --tls-key\) and a token"):
        check_exposure(host, False, False, False)
    with pytest.raises(ValueError, match=r"give a token \(--token-file\)"):
        check_exposure(host, True, False, False)
    assert check_exposure(host, True, True, False) is None
    assert "without TLS" in str(check_exposure(host, False, False, True))


def test_serve_refuses_an_exposed_host_and_bad_files_in_one_line(tmp_path: Path, pki: Path,
                                                                 capsys) -> None:
    (tmp_path / "short.txt").write_text("abc\n")
    for flags, message in [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable beyond this machine"),
        (["--tls-cert", str(pki / "server.pem")], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(pki / "tokens.txt"), "--tls-key", str(pki / "server.key")],
         "not a PEM file"),
        (["--token-file", str(tmp_path / "short.txt")], "at least 16 characters"),
        (["--token-file", str(tmp_path / "none.txt")], "cannot read it"),
    ]:
        assert main(["serve", "--port", "0", "--sessions-dir", str(tmp_path), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_token_comparison_takes_every_token() -> None:
    auth = TokenAuth(["a" * 20, "b" * 20])
    assert auth.allowed([("authorization", "Bearer " + "b" * 20)])
    assert not auth.allowed([("authorization", "Bearer " + "c" * 20)])
    assert not auth.allowed([("authorization", "b" * 20)])
    assert not auth.allowed(None)


# ------------------------------------------------------------------------ Node client

NODE_DIR = Path.home() / ".cache" / "livespt" / "node"


@pytest.fixture(scope="module")
def node_grpc() -> Path:
    """``@grpc/grpc-js`` and ``@grpc/proto-loader`` from npm (cached)."""
    missing = [n for n in ("node", "npm") if shutil.which(n) is None]
    reason = None
    if missing:
        reason = f"{' and '.join(missing)} not found (apt-get install nodejs npm)"
    elif not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").exists():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "install", "--prefix", str(NODE_DIR), "--no-audit",
                              "--no-fund", "@grpc/grpc-js@1", "@grpc/proto-loader@0.7"],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            reason = f"npm install @grpc/grpc-js failed: {out.stderr.strip()[-300:]}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return NODE_DIR


def test_a_node_grpc_js_client_streams_over_tls_with_a_token(server, pki, node_grpc,
                                                             tmp_path: Path) -> None:
    script = tmp_path / "client.js"
    script.write_text(textwrap.dedent("""
        const path = require('path');
        const fs = require('fs');
        const grpc = require('@grpc/grpc-js');
        const loader = require('@grpc/proto-loader');
        const [protoRoot, target, ca, token] = process.argv.slice(2);
        const def = loader.loadSync(path.join(protoRoot, 'livespt/v1/livespt.proto'),
            {includeDirs: [protoRoot], keepCase: true, longs: String, defaults: true});
        const livespt = grpc.loadPackageDefinition(def).livespt.v1;
        const creds = grpc.credentials.createSsl(fs.readFileSync(ca));
        const client = new livespt.LiveSpt(target, creds);
        const auth = new grpc.Metadata();
        auth.set('authorization', 'Bearer ' + token);
        const report = {};
        client.GetServerInfo({}, new grpc.Metadata(), (err) => {
          report.without_token = err ? grpc.status[err.code] : 'OK';
          client.GetServerInfo({}, auth, (err2, info) => {
            if (err2) { console.log(JSON.stringify({error: err2.message})); process.exit(1); }
            report.version = info.version;
            const call = client.StreamFrames(auth);
            let acked = 0;
            call.on('data', (u) => { if (u.frame) acked += 1;
                                     if (u.summary) report.summary_frames = u.summary.frames; });
            call.on('error', (e) => { report.error = e.message; });
            call.on('end', () => { report.acked = acked; console.log(JSON.stringify(report)); });
            call.write({config: {pixel_size_um: 0.1, frame_interval_s: 0.05,
                                 pixel_type: 'PIXEL_TYPE_UINT16', height: 32, width: 32}});
            for (let i = 0; i < 5; i++) {
              const data = Buffer.alloc(32 * 32 * 2);
              for (let k = 0; k < 32 * 32; k++) data.writeUInt16LE(100 + (k * 7 + i) % 13, 2 * k);
              call.write({frame: {index: i, data: data}});
            }
            call.end();
          });
        });
    """))
    env = {**os.environ, "NODE_PATH": str(node_grpc / "node_modules")}
    out = subprocess.run(["node", str(script), str(ROOT / "proto"), server.target,
                          str(pki / "ca.pem"), TOKEN], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["without_token"] == "UNAUTHENTICATED"
    assert report["acked"] == 5 and int(report["summary_frames"]) == 5, report
    assert "error" not in report, report

