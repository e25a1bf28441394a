"""A web app of the standard library and one local wheel (wheels/, named in requirements.txt):
answers every GET on $PORT with a greeting."""

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import greeting


class Greeting(BaseHTTPRequestHandler):
    def do_GET(self):
        index = os.environ.get("INSTANCE_INDEX", "?")
        body = f"{greeting.WORD} from python-app, instance {index}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    print(f"python-app listening on port {port}")
    HTTPServer(("0.0.0.0", port), Greeting).serve_forever()
