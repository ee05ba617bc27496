"""
gateway: the web bridges in front of a PB broker (REST, WebSocket, Server-Sent Events).
"""
