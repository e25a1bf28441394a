"""A WebSocket echo server in Python's standard library, for the router's test under diego dev.

Usage: python3 ws_echo.py PORT. Text and binary frames come back as they went; a close is
answered with a close. Any other request (a health-check probe) gets a plain 200.
"""
import base64
import hashlib
import socket
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            conn.close()
            return
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    keys = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    ]
    if not keys:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.close()
        return
    accept = base64.b64encode(hashlib.sha1(keys[0] + GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    buf = [rest]

    def take(n):
        while len(buf[0]) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf[0] += chunk
        out, buf[0] = buf[0][:n], buf[0][n:]
        return out

    try:
        while True:
            b0, b1 = take(2)
            opcode, length = b0 & 0x0F, b1 & 0x7F
            if length == 126:
                length = int.from_bytes(take(2), "big")
            elif length == 127:
                length = int.from_bytes(take(8), "big")
            mask = take(4) if b1 & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(take(length)))
            if opcode == 0x8:
                conn.sendall(b"\x88\x00")
                break
            if opcode == 0x9:
                opcode = 0xA
            if length < 126:
                header = bytes([0x80 | opcode, length])
            elif length < 65536:
                header = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
            else:
                header = bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")
            conn.sendall(header + payload)
    except (EOFError, ConnectionError):
        pass
    conn.close()


def main():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
