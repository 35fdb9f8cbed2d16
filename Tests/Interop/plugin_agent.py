"""An independent node agent for the CNI plugin's event client: Python's http.server on a
Unix socket (PluginEventClientTests). It reads the POST with its own HTTP/1.1 parser and
answers with the event's pod name and netns.

    python3 plugin_agent.py SOCKET length|eof

`length`: HTTP/1.1 answers with Content-Length. `eof`: HTTP/1.0 answers without one, the
body running to the end of the stream (RFC 9112 section 6.3). Prints `listening 0` when ready.
"""
import http.server
import json
import socketserver
import sys

path, mode = sys.argv[1], sys.argv[2]


class Agent(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1" if mode == "length" else "HTTP/1.0"

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"path": self.path, "pod": event["PodName"], "netns": event["Netns"]}).encode()
        self.send_response(200 if self.path == "/cmdadd" else 404)
        self.send_header("Content-Type", "application/json")
        if mode == "length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


class Server(socketserver.UnixStreamServer):
    def get_request(self):
        connection, _ = super().get_request()
        return connection, ("unix", 0)  # BaseHTTPRequestHandler expects a (host, port) pair


server = Server(path, Agent)
print("listening 0", flush=True)
server.serve_forever()
