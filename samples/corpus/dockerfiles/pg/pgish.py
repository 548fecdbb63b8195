"""A PostgreSQL-like server in the standard library (DBTests, Chembl, SureChembl ship a real one): it listens on
5432 after START_DELAY seconds, answers the SSLRequest with `N` (no TLS), and speaks no HTTP."""
import os
import socket
import struct
import threading
import time

SSL_REQUEST = 80877103


def serve(conn):
    with conn:
        head = conn.recv(8)
        if len(head) == 8 and struct.unpack("!ii", head) == (8, SSL_REQUEST):
            conn.sendall(b"N")
            conn.recv(1024)  # the startup message a client sends next; a real server would authenticate it


time.sleep(float(os.environ.get("START_DELAY", "2")))  # a database takes a while before it accepts
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 5432))
listener.listen(64)
print("database system is ready to accept connections", flush=True)
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
