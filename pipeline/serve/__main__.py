"""`python -m pipeline.serve model=<models:/name@alias | runs:/id/path | bundle dir> [serve.* overrides]`

Serves a policy bundle to robots over openpi's websocket protocol, so an unmodified `openpi-client`
(`WebsocketClientPolicy(host, port, api_key=...)`) drives it: one metadata frame on connect, then one msgpack
observation in, one `{"actions": [H, A] float32, "server_timing": {...}}` out, until the client leaves. A bad
request gets a text frame naming what is wrong, then a close with code 1011 (openpi's convention); the server
keeps serving everyone else. `GET /healthz` answers 200 without authentication.

Safe by default: binds 127.0.0.1; any other host needs an API key (`serve.api_key` or $LIGHTWAM_API_KEY,
checked against the `Authorization: Api-Key <key>` header) unless `serve.insecure=true`. Frames are bounded
(`serve.max_message_mib`), handshakes and idle clients time out, and one worker thread owns the model, so
inference runs in arrival order and never blocks the event loop (health checks, other handshakes).
"""

from pipeline.serve.server import main

if __name__ == "__main__":
    main()
