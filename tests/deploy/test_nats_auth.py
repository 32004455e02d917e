"""node.nats_auth: NATS_* environment → nats.connect() keyword arguments."""

from __future__ import annotations

import inspect
import shutil
import ssl
import subprocess

import nats
import nats.errors
import pytest

from contracts import subjects
from node.embedded import EmbeddedServer
from node.nats_auth import AuthConfigError, connect_options, denied_subject, is_inbox_subject

from .support import PASSWORDS


def _file(tmp_path, name: str, text: str = "x") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_option_is_a_nats_connect_parameter(tmp_path):
    # Guards against typos and nats-py renames: all keys must be real connect() parameters.
    allowed = set(inspect.signature(nats.aio.client.Client.connect).parameters)
    prefix = {"NATS_INBOX_PREFIX": "_INBOX_x"}
    for env in (
        {"NATS_CREDS": _file(tmp_path, "n.creds"), **prefix},
        {"NATS_NKEY_SEED": _file(tmp_path, "n.nk")},
        {"NATS_USER": "u", "NATS_PASSWORD": "p"},
        {"NATS_TOKEN": "t"},
    ):
        assert set(connect_options(env)) <= allowed
    assert "tls" in allowed


def test_empty_environment_gives_no_options():
    assert connect_options({}) == {}


def test_blank_values_count_as_unset():
    assert connect_options({"NATS_USER": "", "NATS_TOKEN": "  ", "NATS_TLS_CA": ""}) == {}


def test_user_and_password():
    assert connect_options({"NATS_USER": "node", "NATS_PASSWORD": "pw"}) == {
        "user": "node",
        "password": "pw",
    }


def test_password_without_user_is_rejected():
    with pytest.raises(AuthConfigError, match="NATS_USER"):
        connect_options({"NATS_PASSWORD": "pw"})


def test_token():
    assert connect_options({"NATS_TOKEN": "t0k"}) == {"token": "t0k"}


def test_creds_file_becomes_user_credentials(tmp_path):
    path = _file(tmp_path, "node.creds")
    assert connect_options({"NATS_CREDS": path}) == {"user_credentials": path}


def test_nkey_seed_file_becomes_nkeys_seed(tmp_path):
    path = _file(tmp_path, "node.nk")
    assert connect_options({"NATS_NKEY_SEED": path}) == {"nkeys_seed": path}


def test_missing_credential_file_is_named_without_its_contents(tmp_path):
    with pytest.raises(AuthConfigError, match="NATS_CREDS") as caught:
        connect_options({"NATS_CREDS": str(tmp_path / "absent.creds")})
    assert "absent" not in str(caught.value)


def test_two_credential_kinds_are_rejected(tmp_path):
    env = {"NATS_CREDS": _file(tmp_path, "a.creds"), "NATS_USER": "u", "NATS_PASSWORD": "s3cret"}
    with pytest.raises(AuthConfigError, match="only one") as caught:
        connect_options(env)
    assert "NATS_CREDS" in str(caught.value) and "s3cret" not in str(caught.value)


def test_inbox_prefix():
    assert connect_options({"NATS_INBOX_PREFIX": "_INBOX_client"}) == {
        "inbox_prefix": "_INBOX_client"
    }


@pytest.mark.parametrize("bad", ["_INBOX.>", "_INBOX.*", "_INBOX.", "a b"])
def test_wildcard_or_malformed_inbox_prefix_is_rejected(bad):
    with pytest.raises(AuthConfigError, match="NATS_INBOX_PREFIX"):
        connect_options({"NATS_INBOX_PREFIX": bad})


def test_tls_key_without_certificate_is_rejected(tmp_path):
    with pytest.raises(AuthConfigError, match="NATS_TLS_CERT"):
        connect_options({"NATS_TLS_KEY": _file(tmp_path, "k.pem")})


# --- is_inbox_subject: the reply-subject guard the node should apply --------------------------


@pytest.mark.parametrize(
    "subject", ["_INBOX.abc.1", "_INBOX_client.abc.def", "_INBOX_client2.x", "_R_.ofgQVs.UCc7b2"]
)
def test_inbox_subjects_are_safe_reply_targets(subject):
    assert is_inbox_subject(subject)


@pytest.mark.parametrize(
    "subject",
    [None, "", "_INBOX", "strategy.results.job-1", "$JS.API.STREAM.DELETE.STRATEGY_JOBS",
     "strategy.jobs.x", "x._INBOX.y", "_INBOX.", "_R_", "_R_.", "_R_x.y", "x._R_.y"],
)
def test_other_subjects_are_not_reply_targets(subject):
    assert not is_inbox_subject(subject)


# --- against real servers --------------------------------------------------------------------


async def test_options_authenticate_node_user_against_permissions_config(permissions_server):
    options = connect_options({"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    errors: list[Exception] = []

    async def error_cb(exc):
        errors.append(exc)

    nc = await nats.connect(permissions_server.url, error_cb=error_cb, allow_reconnect=False,
                            **options)
    try:
        await nc.subscribe(subjects.EXECUTE, queue=subjects.QUEUE_GROUP)
        await nc.flush()
        assert nc.is_connected and errors == []
    finally:
        await nc.close()


async def test_options_inbox_prefix_lets_client_receive_replies(permissions_server):
    node = await nats.connect(permissions_server.url, allow_reconnect=False, **connect_options(
        {"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]}))
    client = await nats.connect(permissions_server.url, allow_reconnect=False, **connect_options(
        {"NATS_USER": "client", "NATS_PASSWORD": PASSWORDS["client"],
         "NATS_INBOX_PREFIX": "_INBOX_client"}))
    try:
        async def answer(msg):
            await msg.respond(b"ok")

        await node.subscribe(subjects.VALIDATE, queue=subjects.QUEUE_GROUP, cb=answer)
        await node.flush()
        reply = await client.request(subjects.VALIDATE, b"{}", timeout=2)
        assert reply.data == b"ok"
    finally:
        await client.close()
        await node.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
    return d


def test_tls_variables_build_a_verifying_client_context(tls_files):
    options = connect_options({
        "NATS_TLS_CA": str(tls_files / "ca.pem"),
        "NATS_TLS_CERT": str(tls_files / "client.pem"),
        "NATS_TLS_KEY": str(tls_files / "client.key"),
    })
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_tls_options_connect_with_mutual_tls(tls_files, tmp_path):
    # The server demands a client certificate signed by the CA (verify: true).
    conf = tmp_path / "tls.conf"
    conf.write_text(
        "tls {\n"
        f'  cert_file: "{tls_files / "server.pem"}"\n'
        f'  key_file: "{tls_files / "server.key"}"\n'
        f'  ca_file: "{tls_files / "ca.pem"}"\n'
        "  verify: true\n"
        "}\n"
    )
    env = {
        "NATS_TLS_CA": str(tls_files / "ca.pem"),
        "NATS_TLS_CERT": str(tls_files / "client.pem"),
        "NATS_TLS_KEY": str(tls_files / "client.key"),
    }
    with EmbeddedServer(config_file=str(conf), jetstream=False) as server:
        url = f"tls://127.0.0.1:{server.port}"
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=3,
                                **connect_options(env))
        try:
            assert nc.is_connected
            await nc.flush()
        finally:
            await nc.close()

        # Without the client certificate the handshake is refused.
        no_cert = connect_options({"NATS_TLS_CA": env["NATS_TLS_CA"]})
        with pytest.raises((OSError, nats.errors.Error)):  # ssl error / broken pipe
            await nats.connect(url, allow_reconnect=False, connect_timeout=3,
                               max_reconnect_attempts=0, **no_cert)


@pytest.mark.parametrize("text, subject", [
    ('nats: permissions violation for publish to "$js.api.direct.get.refdata"', "$js.api.direct.get.refdata"),
    ('nats: permissions violation for subscription to "bars.>"', "bars.>"),
    ('nats: Permissions Violation for Publish to "refdata.securities.ACME"', "refdata.securities.ACME"),
    ("nats: stale connection", None),
    ("nats: maximum payload exceeded", None),
])
def test_denied_subject_reads_the_subject_of_a_permissions_violation_and_nothing_else(text, subject):
    assert denied_subject(nats.errors.Error(text)) == subject
