"""Serving a trained policy to robots over openpi's websocket protocol.

`server` runs the websocket server (auth, limits, one inference thread), `protocol` is the wire format and
the observation contract, `policy` loads and describes the served policy (the same `model.policy` class
evaluation calls), `client` drives evaluation through a running server, `config` holds `serve.*`.
"""
