"""`buf curl` with server reflection lists and calls Ferryman's gRPC services, over gRPC and
gRPC-web, on the same port as the HTTP routes."""

import json

from conftest import MASTER_KEY, buf_curl


def test_reflection_lists_and_calls(sqlite_gateway):
    gw = sqlite_gateway
    methods = buf_curl("--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", gw.url).split()
    for m in [
        "ferryman.v1.InferenceService/CreateChatCompletion",
        "ferryman.v1.InferenceService/StreamChatCompletion",
        "ferryman.v1.KeyService/CreateKey",
        "ferryman.v1.SpendService/ListSpendLogs",
        "grpc.health.v1.Health/Check",
    ]:
        assert m in methods, methods

    request = {"params": {"model": "demo", "messages": [{"role": "ROLE_USER", "text": "hi from buf"}]}}
    for protocol, extra in (("grpc", ["--http2-prior-knowledge"]), ("grpcweb", [])):
        out = buf_curl(
            "--protocol",
            protocol,
            *extra,
            "-H",
            f"authorization: Bearer {MASTER_KEY}",
            "-d",
            json.dumps(request),
            f"{gw.url}/ferryman.v1.InferenceService/CreateChatCompletion",
        )
        reply = json.loads(out)
        assert "hi from buf" in reply["choices"][0]["message"]["text"]
        assert reply["call"]["deployment"] == "demo-mock-1"
        assert int(reply["call"]["costNanos"]) > 0

    # Server streaming: one JSON object per message, the last with usage and cost.
    out = buf_curl(
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        f"authorization: Bearer {MASTER_KEY}",
        "-d",
        json.dumps(request),
        f"{gw.url}/ferryman.v1.InferenceService/StreamChatCompletion",
    )
    messages = [json.loads(m) for m in out.replace("}\n{", "}\x00{").split("\x00") if m.strip()]
    assert len(messages) > 2
    assert "usage" in messages[-1] and "call" in messages[-1]
