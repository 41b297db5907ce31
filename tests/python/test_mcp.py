"""The MCP gateway through the official Python SDK (`mcp`), in both protocol generations: the
`initialize`/session one (mode="legacy") and the stateless 2026-07-28 one.

Behind Ferryman: `echo`, a Streamable HTTP server written with the same SDK
(`mcp_upstream.py`, which reports the Authorization header it receives), and `time`, the
`mcp-server-time` package over stdio.
"""

import asyncio
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import MASTER_KEY, Gateway, buf_curl

HERE = pathlib.Path(__file__).resolve().parent
UPSTREAM_TOKEN = "upstream-secret-token-42"
LONG_NAME = "summarize_every_document_in_the_shared_drive_" + "x" * 30
MODES = ["legacy", "2026-07-28"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_upstream(port, transport="http", extra_tools=0):
    """The Python SDK's server on `port` (Streamable HTTP, or the legacy SSE transport), once it
    accepts connections."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "mcp_upstream.py"), transport, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MCP_UPSTREAM_EXTRA_TOOLS": str(extra_tools)},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            assert time.monotonic() < deadline, "the upstream MCP server did not start"
            time.sleep(0.1)


@pytest.fixture
def upstream_proc():
    port = free_port()
    state = {"port": port, "proc": start_upstream(port)}
    yield state
    state["proc"].terminate()
    state["proc"].wait(timeout=10)


@pytest.fixture
def upstream(upstream_proc):
    return f"http://127.0.0.1:{upstream_proc['port']}/mcp"


def mcp_config(upstream_url):
    time_server = pathlib.Path(sys.executable).parent / "mcp-server-time"
    return f"""
mcp_servers:
  echo:
    url: {upstream_url}
    auth_type: bearer_token
    authentication_token: {UPSTREAM_TOKEN}
    disallowed_tools: [add]
    log_arguments: true
    mcp_info:
      mcp_server_cost_info:
        default_cost_per_query: 0.001
        tool_name_to_cost_per_query: {{echo: 0.01}}
  time:
    transport: stdio
    command: {time_server}
    args: ["--local-timezone", "UTC"]
"""


@pytest.fixture
def gateway(upstream):
    gw = Gateway("sqlite", extra_config=mcp_config(upstream))
    try:
        yield gw
    finally:
        gw.close()


def client(url, key, mode, headers=None):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}", **(headers or {})}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


async def tool_names(url, key, mode, headers=None):
    async with client(url, key, mode, headers) as c:
        names = []
        cursor = None
        while True:
            page = await c.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                return names


def leaves(error):
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


def text_of(result):
    return "".join(getattr(block, "text", "") for block in result.content)


@pytest.mark.parametrize("mode", MODES)
def test_tools_are_aggregated_prefixed_and_filtered(gateway, mode):
    key = gateway.create_key()["key"]
    names = asyncio.run(tool_names(f"{gateway.url}/mcp", key, mode))
    assert "echo-echo" in names
    assert "echo-whoami" in names
    assert "echo-add" not in names, "disallowed_tools hides a tool"
    assert "time-get_current_time" in names and "time-convert_time" in names
    long = [n for n in names if n.startswith("echo-summarize_every_document")]
    assert len(long) == 1 and len(long[0]) == 64, long

    async def calls():
        async with client(f"{gateway.url}/mcp", key, mode) as c:
            echoed = await c.call_tool("echo-echo", {"text": "through the gateway"})
            who = await c.call_tool("echo-whoami", {})
            now = await c.call_tool("time-get_current_time", {"timezone": "UTC"})
            shortened = await c.call_tool(long[0], {})
            return echoed, who, now, shortened

    echoed, who, now, shortened = asyncio.run(calls())
    assert text_of(echoed) == "through the gateway"
    # The upstream sees Ferryman's credential for it, never the client's key.
    assert text_of(who) == f"Bearer {UPSTREAM_TOKEN}"
    assert key not in text_of(who)
    assert '"timezone": "UTC"' in text_of(now) or '"timezone":"UTC"' in text_of(now), text_of(now)
    assert text_of(shortened) == "long"


@pytest.mark.parametrize("mode", MODES)
def test_one_server_by_path_or_header(gateway, mode):
    key = gateway.create_key()["key"]
    only_time = asyncio.run(tool_names(f"{gateway.url}/mcp/time", key, mode))
    assert only_time and all(n.startswith("time-") for n in only_time)
    narrowed = asyncio.run(tool_names(f"{gateway.url}/mcp", key, mode, {"x-mcp-servers": "echo"}))
    assert narrowed and all(n.startswith("echo-") for n in narrowed)


def test_unknown_tools_keys_and_servers_are_refused_clearly(gateway):
    key = gateway.create_key()["key"]

    async def unknown_tool():
        async with client(f"{gateway.url}/mcp", key, "2026-07-28") as c:
            return await c.call_tool("echo-nope", {})

    with pytest.raises(BaseException) as raised:
        asyncio.run(unknown_tool())
    errors = leaves(raised.value)
    assert any(isinstance(e, MCPError) and 'unknown tool "echo-nope"' in str(e) for e in errors), errors
    r = httpx2.post(f"{gateway.url}/mcp", json={}, headers={"Authorization": "Bearer sk-not-a-key-0000000000"})
    assert r.status_code == 401
    r = httpx2.post(f"{gateway.url}/mcp/nosuch", json={}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404
    assert "nosuch" in r.json()["error"]["message"]


def post(gw, path, body):
    r = httpx2.post(f"{gw.url}{path}", json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()


def list_error(url, key):
    with pytest.raises(BaseException) as raised:
        asyncio.run(tool_names(url, key, "2026-07-28"))
    return " ".join(str(e) for e in leaves(raised.value))


def test_object_permission_narrows_by_key_team_and_organization(gateway):
    only_time = gateway.create_key(object_permission={"mcp_servers": ["time"]})["key"]
    names = asyncio.run(tool_names(f"{gateway.url}/mcp", only_time, "2026-07-28"))
    assert names and all(n.startswith("time-") for n in names)
    r = httpx2.post(f"{gateway.url}/mcp/echo", json={}, headers={"Authorization": f"Bearer {only_time}"})
    assert r.status_code == 403 and 'MCP server "echo"' in r.json()["error"]["message"], r.text

    # The team allows echo and time; its key narrows to echo's `echo` tool.
    post(gateway, "/team/new", {"team_id": "tools", "object_permission": {"mcp_servers": ["echo", "time"]}})
    narrow = gateway.create_key(
        team_id="tools", object_permission={"mcp_servers": ["echo"], "mcp_tool_permissions": {"echo": ["echo"]}}
    )["key"]
    assert asyncio.run(tool_names(f"{gateway.url}/mcp", narrow, "legacy")) == ["echo-echo"]

    async def hidden_tool():
        async with client(f"{gateway.url}/mcp", narrow, "legacy") as c:
            return await c.call_tool("echo-whoami", {})

    with pytest.raises(BaseException) as raised:
        asyncio.run(hidden_tool())
    assert any('unknown tool "echo-whoami"' in str(e) for e in leaves(raised.value))

    # A key never widens its team: the organization allows only time, the key asks for both.
    post(gateway, "/organization/new", {"organization_alias": "acme", "organization_id": "acme", "object_permission": {"mcp_access_groups": []}})
    post(gateway, "/team/update", {"team_id": "tools", "organization_id": "acme"})
    post(gateway, "/organization/update", {"organization_id": "acme", "object_permission": {"mcp_servers": ["time"]}})
    wide = gateway.create_key(team_id="tools", object_permission={"mcp_servers": ["echo", "time"]})["key"]
    names = asyncio.run(tool_names(f"{gateway.url}/mcp", wide, "2026-07-28"))
    assert names and all(n.startswith("time-") for n in names)

    nothing = gateway.create_key(object_permission={"mcp_servers": []})["key"]
    assert "this key may use no MCP server" in list_error(f"{gateway.url}/mcp", nothing)

    r = httpx2.post(
        f"{gateway.url}/key/generate",
        json={"object_permission": {"mcp_servers": ["no spaces allowed"]}},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert r.status_code == 400 and "object_permission.mcp_servers[0]" in r.json()["error"]["message"], r.text


def test_default_access_none_makes_mcp_opt_in(upstream):
    gw = Gateway("sqlite", extra_config="  mcp_default_access: none\n" + mcp_config(upstream))
    try:
        plain = gw.create_key()["key"]
        assert "this key may use no MCP server" in list_error(f"{gw.url}/mcp", plain)
        granted = gw.create_key(object_permission={"mcp_access_groups": [], "mcp_servers": ["echo"]})["key"]
        names = asyncio.run(tool_names(f"{gw.url}/mcp", granted, "2026-07-28"))
        assert names and all(n.startswith("echo-") for n in names)
    finally:
        gw.close()


def test_tool_calls_are_charged_recorded_and_counted(gateway):
    key_info = gateway.create_key(max_budget=0.015)
    key = key_info["key"]

    async def calls():
        async with client(f"{gateway.url}/mcp", key, "2026-07-28") as c:
            first = await c.call_tool("echo-echo", {"text": "one"})
            free = await c.call_tool("time-get_current_time", {"timezone": "UTC"})
            cheap = await c.call_tool("echo-whoami", {})
            refused = await c.call_tool("echo-echo", {"text": "two"})
            return first, free, cheap, refused

    first, free, cheap, refused = asyncio.run(calls())
    assert text_of(first) == "one" and not first.is_error
    assert not free.is_error and not cheap.is_error
    # 0.01 + 0 + 0.001 spent of 0.015: another 0.01 call would overspend, so it is refused.
    assert refused.is_error and "budget" in text_of(refused).lower(), text_of(refused)

    rows = gateway.spend_logs({"api_key": key_info["key_id"]}, 3)
    assert {r["call_type"] for r in rows} == {"mcp_tool_call"}
    assert {r["api_key"] for r in rows} == {key_info["key_id"]}
    assert sorted((r["model"], r["spend"]) for r in rows) == [
        ("echo-echo", 0.01),
        ("echo-whoami", 0.001),
        ("time-get_current_time", 0.0),
    ], rows
    info = httpx2.get(
        f"{gateway.url}/key/info", params={"key": key}, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ).json()
    assert info["info"]["spend"] == pytest.approx(0.011)

    # Each record says which server and tool ran, how it ended and how long it took; echo's
    # arguments are kept (log_arguments: true on that server), time's are not (the default).
    meta = {r["model"]: r["metadata"]["mcp_tool_call_metadata"] for r in rows}
    assert {r["mcp_namespaced_tool_name"] for r in rows} == set(meta)
    assert meta["echo-echo"]["mcp_server_name"] == "echo" and meta["echo-echo"]["name"] == "echo"
    assert meta["echo-echo"]["status"] == "ok" and meta["echo-echo"]["duration_ms"] >= 0
    assert meta["echo-echo"]["arguments"] == {"text": "one"}
    assert meta["time-get_current_time"]["name"] == "get_current_time"
    assert "arguments" not in meta["time-get_current_time"], meta

    metrics = httpx2.get(f"{gateway.url}/metrics").text
    assert 'ferryman_mcp_tool_calls_total{server="echo",tool="echo-echo",status="ok"} 1' in metrics, metrics
    assert 'ferryman_mcp_tool_spend_usd_total{server="echo",tool="echo-echo"} 0.01' in metrics


def test_a_tool_error_is_charged_and_recorded_with_what_it_said(gateway):
    key_info = gateway.create_key()

    async def failing():
        async with client(f"{gateway.url}/mcp", key_info["key"], "legacy") as c:
            return await c.call_tool("echo-echo", {})

    result = asyncio.run(failing())
    assert result.is_error, "echo without its text argument is the tool's own error"
    [row] = gateway.spend_logs({"api_key": key_info["key_id"]}, 1)
    meta = row["metadata"]["mcp_tool_call_metadata"]
    assert row["spend"] == 0.01 and row["error_code"] == "tool_error", row
    assert meta["status"] == "tool_error" and "text" in meta["error"], meta
    assert meta["arguments"] == {}
    metrics = httpx2.get(f"{gateway.url}/metrics").text
    assert 'ferryman_mcp_tool_calls_total{server="echo",tool="echo-echo",status="tool_error"} 1' in metrics

    # The same record over gRPC (SpendService, through buf curl and reflection).
    out = buf_curl(
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        f"authorization: Bearer {MASTER_KEY}",
        "-d",
        json.dumps({"keyId": key_info["key_id"]}),
        f"{gateway.url}/ferryman.v1.SpendService/ListSpendLogs",
    )
    [log] = json.loads(out)["spendLogs"]
    assert log["callType"] == "mcp_tool_call" and log["model"] == "echo-echo"
    assert log["metadata"]["mcp_tool_call_metadata"]["status"] == "tool_error"
    assert log["metadata"]["mcp_tool_call_metadata"]["arguments"] == {}


def test_a_dead_upstream_hides_only_its_tools_and_comes_back(upstream_proc, gateway):
    key = gateway.create_key()["key"]
    url = f"{gateway.url}/mcp"
    assert "echo-echo" in asyncio.run(tool_names(url, key, "2026-07-28"))
    assert 'ferryman_mcp_server_up{server="echo"} 1' in httpx2.get(f"{gateway.url}/metrics").text

    upstream_proc["proc"].kill()
    upstream_proc["proc"].wait(timeout=10)

    async def call_echo():
        async with client(url, key, "2026-07-28") as c:
            return await c.call_tool("echo-echo", {"text": "anyone?"})

    started = time.monotonic()
    dead = asyncio.run(call_echo())
    assert dead.is_error and 'MCP server "echo" is unreachable' in text_of(dead), text_of(dead)
    assert time.monotonic() - started < 15, "a dead upstream must not hang the call"
    names = asyncio.run(tool_names(url, key, "2026-07-28"))
    assert names and all(n.startswith("time-") for n in names), names
    assert any("alert=\"mcp_server_unhealthy\"" in line or "alert=mcp_server_unhealthy" in line for line in gateway.log)
    metrics = httpx2.get(f"{gateway.url}/metrics").text
    assert 'ferryman_mcp_server_up{server="echo"} 0' in metrics and 'ferryman_mcp_server_up{server="time"} 1' in metrics

    upstream_proc["proc"] = start_upstream(upstream_proc["port"])
    back = asyncio.run(call_echo())
    assert not back.is_error and text_of(back) == "anyone?"
    assert "echo-echo" in asyncio.run(tool_names(url, key, "2026-07-28"))


def test_a_legacy_sse_server_behind_the_gateway():
    port = free_port()
    proc = start_upstream(port, "sse")
    gw = Gateway(
        "sqlite",
        extra_config=f"""
mcp_servers:
  legacy:
    url: http://127.0.0.1:{port}/sse
    transport: sse
    auth_type: api_key
    authentication_token: sse-upstream-key
""",
    )
    try:
        key = gw.create_key()["key"]
        for mode in MODES:
            names = asyncio.run(tool_names(f"{gw.url}/mcp", key, mode))
            assert "legacy-echo" in names and "legacy-add" in names, names

        async def calls():
            async with client(f"{gw.url}/mcp", key, "legacy") as c:
                return (
                    await c.call_tool("legacy-add", {"a": 2, "b": 40}),
                    await c.call_tool("legacy-whoami", {}),
                    await c.call_tool("legacy-apikey", {}),
                )

        added, who, api_key = asyncio.run(calls())
        assert text_of(added) == "42"
        assert text_of(api_key) == "sse-upstream-key"
        assert text_of(who) == "(none)", "an api_key credential goes in X-API-Key, and the client's key nowhere"
    finally:
        gw.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_servers_registered_through_the_api(gateway, upstream):
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    created = httpx2.post(
        f"{gateway.url}/v1/mcp/server",
        json={
            "server_name": "dyn",
            "url": upstream,
            "auth_type": "bearer_token",
            "authentication_token": "dyn-secret-token",
            "description": "registered at run time",
        },
        headers=admin,
    )
    assert created.status_code == 200, created.text
    assert created.json()["source"] == "api" and created.json()["auth_type"] == "bearer_token"
    listed = httpx2.get(f"{gateway.url}/v1/mcp/server", headers=admin)
    assert {s["server_name"]: s["source"] for s in listed.json()} == {"echo": "config", "time": "config", "dyn": "api"}
    audit = httpx2.get(f"{gateway.url}/audit", params={"object_type": "mcp_server"}, headers=admin)
    for secret in ["dyn-secret-token", UPSTREAM_TOKEN]:
        assert secret not in created.text + listed.text + audit.text, "a credential was shown"

    key = gateway.create_key()["key"]

    async def whoami():
        async with client(f"{gateway.url}/mcp/dyn", key, "2026-07-28") as c:
            return text_of(await c.call_tool("dyn-whoami", {}))

    assert asyncio.run(whoami()) == "Bearer dyn-secret-token"
    changed = httpx2.put(
        f"{gateway.url}/v1/mcp/server", json={"server_name": "dyn", "authentication_token": "rotated-token"}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert asyncio.run(whoami()) == "Bearer rotated-token", "a changed credential is used at once"

    user_key = gateway.create_key()["key"]
    r = httpx2.post(f"{gateway.url}/v1/mcp/server", json={"server_name": "x", "url": upstream}, headers={"Authorization": f"Bearer {user_key}"})
    assert r.status_code == 403
    r = httpx2.post(f"{gateway.url}/v1/mcp/server", json={"server_name": "echo", "url": upstream}, headers=admin)
    assert r.status_code == 409 and "config file" in r.text
    r = httpx2.post(f"{gateway.url}/v1/mcp/server", json={"server_name": "bad", "transport": "carrier-pigeon"}, headers=admin)
    assert r.status_code == 400 and "transport" in r.json()["error"]["message"], r.text

    assert httpx2.delete(f"{gateway.url}/v1/mcp/server/dyn", headers=admin).status_code == 200
    assert httpx2.get(f"{gateway.url}/v1/mcp/server/dyn", headers=admin).status_code == 404
    names = asyncio.run(tool_names(f"{gateway.url}/mcp", key, "2026-07-28"))
    assert not any(n.startswith("dyn-") for n in names)


def test_a_callers_own_credential_passes_through_for_its_server(gateway):
    key = gateway.create_key()["key"]
    personal = {"x-mcp-echo-authorization": "Bearer alices-own-github-token"}

    async def whoami(headers):
        async with client(f"{gateway.url}/mcp", key, "legacy", headers) as c:
            return text_of(await c.call_tool("echo-whoami", {}))

    assert asyncio.run(whoami(personal)) == "Bearer alices-own-github-token"
    assert asyncio.run(whoami(personal)) == "Bearer alices-own-github-token"
    assert asyncio.run(whoami({})) == f"Bearer {UPSTREAM_TOKEN}", "without the header, Ferryman's credential"


def test_mcp_rpm_limit_per_server_on_the_key(gateway):
    key = gateway.create_key(mcp_rpm_limit={"echo": 2})["key"]

    async def calls():
        async with client(f"{gateway.url}/mcp", key, "2026-07-28") as c:
            echoes = [await c.call_tool("echo-echo", {"text": str(i)}) for i in range(3)]
            other = await c.call_tool("time-get_current_time", {"timezone": "UTC"})
            return echoes, other

    echoes, other = asyncio.run(calls())
    assert [e.is_error for e in echoes] == [False, False, True]
    assert 'on MCP server "echo": requests per minute limit 2' in text_of(echoes[2]), text_of(echoes[2])
    assert not other.is_error, "the limit is per server"


class TokenEndpoint:
    """An OAuth 2 token endpoint (client credentials) on a free port: it checks the client's id
    and secret, in the form body or as HTTP Basic, and hands out `tok-1`, `tok-2`, … that live
    `expires_in` seconds. `requests` keeps what each request sent."""

    def __init__(self, client_id, client_secret, expires_in):
        import base64
        import http.server
        import threading
        import urllib.parse

        self.requests = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                form = dict(urllib.parse.parse_qsl(body))
                basic = self.headers.get("authorization", "")
                if basic.startswith("Basic "):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form.setdefault("client_id", urllib.parse.unquote_plus(user))
                    form.setdefault("client_secret", urllib.parse.unquote_plus(password))
                    form["via"] = "basic"
                endpoint.requests.append(form)
                if form.get("grant_type") != "client_credentials" or (
                    form.get("client_id"),
                    form.get("client_secret"),
                ) != (client_id, client_secret):
                    status, answer = 401, {"error": "invalid_client", "error_description": "bad client credentials"}
                else:
                    status = 200
                    answer = {"access_token": f"tok-{len(endpoint.requests)}", "token_type": "Bearer", "expires_in": expires_in}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_oauth2_client_credentials_are_fetched_cached_and_renewed(upstream):
    tokens = TokenEndpoint("ferryman", "client-secret-77", expires_in=2)
    gw = Gateway(
        "sqlite",
        extra_config=f"""
mcp_servers:
  secure:
    url: {upstream}
    auth_type: oauth2
    token_url: {tokens.url}
    client_id: ferryman
    client_secret: client-secret-77
    scopes: [tools.read, tools.call]
  wrongsecret:
    url: {upstream}
    auth_type: oauth2
    token_url: {tokens.url}
    token_endpoint_auth_method: client_secret_basic
    client_id: ferryman
    client_secret: not-the-secret-99
""",
    )
    try:
        key = gw.create_key()["key"]

        async def whoami(server):
            async with client(f"{gw.url}/mcp/{server}", key, "2026-07-28") as c:
                result = await c.call_tool(f"{server}-whoami", {})
                return result.is_error, text_of(result)

        assert asyncio.run(whoami("secure")) == (False, "Bearer tok-1")
        assert asyncio.run(whoami("secure")) == (False, "Bearer tok-1"), "the token is reused while it lives"
        [first] = tokens.requests
        assert first == {
            "grant_type": "client_credentials",
            "client_id": "ferryman",
            "client_secret": "client-secret-77",
            "scope": "tools.read tools.call",
        }
        time.sleep(2.5)
        assert asyncio.run(whoami("secure")) == (False, "Bearer tok-2"), "an expired token is renewed"

        # A refused client: the listing leaves its tools out, a call says why, and neither
        # the secret nor the virtual key appears anywhere.
        names = asyncio.run(tool_names(f"{gw.url}/mcp", key, "legacy"))
        assert "secure-echo" in names and not any(n.startswith("wrongsecret-") for n in names), names
        refused = tokens.requests[-1]
        assert refused["via"] == "basic" and refused["client_secret"] == "not-the-secret-99"
        is_error, text = asyncio.run(whoami("wrongsecret"))
        assert is_error and "invalid_client" in text and "bad client credentials" in text, text
        assert "not-the-secret-99" not in text and key not in text
        admin = {"Authorization": f"Bearer {MASTER_KEY}"}
        shown = httpx2.get(f"{gw.url}/v1/mcp/server/secure", headers=admin).json()
        assert shown["auth_type"] == "oauth2" and shown["token_url"] == tokens.url and shown["client_id"] == "ferryman"
        assert "client-secret-77" not in json.dumps(shown)
        assert not any("client-secret-77" in line or "not-the-secret-99" in line for line in gw.log)
    finally:
        gw.close()
        tokens.close()


def test_a_long_tool_list_is_paginated():
    port = free_port()
    proc = start_upstream(port, extra_tools=150)
    gw = Gateway("sqlite", extra_config=f"mcp_servers:\n  many:\n    url: http://127.0.0.1:{port}/mcp\n")
    try:
        key = gw.create_key()["key"]

        async def pages(mode):
            async with client(f"{gw.url}/mcp", key, mode) as c:
                out, cursor = [], None
                while True:
                    page = await c.list_tools(cursor=cursor)
                    out.append([t.name for t in page.tools])
                    cursor = page.next_cursor
                    if not cursor:
                        return out

        for mode in MODES:
            got = asyncio.run(pages(mode))
            # 150 numbered tools and the 5 the server always has, 100 a page, in name order.
            assert [len(p) for p in got] == [100, 55], [len(p) for p in got]
            names = [n for p in got for n in p]
            assert names == sorted(names) and len(set(names)) == 155
            assert "many-tool_000" in names and "many-tool_149" in names
    finally:
        gw.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_the_python_sdk_1x_client(gateway):
    """The 1.x SDK's client, which only speaks the initialize/session protocol."""
    python = HERE.parent.parent / ".venv-mcp1" / "bin" / "python"
    assert python.exists(), "tests/setup.sh makes .venv-mcp1"
    key = gateway.create_key()["key"]
    out = subprocess.run(
        [str(python), str(HERE / "mcp1_client.py"), f"{gateway.url}/mcp", key, "echo-echo", '{"text": "from 1.x"}'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["protocol_version"] == "2025-11-25" and got["server"] == "ferryman"
    assert "echo-echo" in got["tools"] and "time-get_current_time" in got["tools"] and "echo-add" not in got["tools"]
    assert (got["is_error"], got["text"]) == (False, "from 1.x")
