#!/usr/bin/env python3
"""Serves the wmoe demo page (web/index.html + its wasm build in web/pkg/) and GGUF files
over HTTP with Range requests, which the page streams weights with (Python's own
http.server ignores Range and would send whole files).

  python3 tools/serve_web.py [--port 8080] [--models DIR]

Then open http://127.0.0.1:8080/ (127.0.0.1 is a secure context, as WebGPU needs); files
under --models are at /models/NAME.
"""

import argparse
import http.server
import os
import re


def handler(web_dir, models_dir):
    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map = {
            **http.server.SimpleHTTPRequestHandler.extensions_map,
            ".wasm": "application/wasm",
            ".js": "text/javascript",
        }

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=web_dir, **kw)

        def translate_path(self, path):
            if models_dir and path.startswith("/models/"):
                name = os.path.basename(path.split("?")[0])
                return os.path.join(models_dir, name)
            return super().translate_path(path)

        def send_head(self):
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            path = self.translate_path(self.path)
            if not m or not os.path.isfile(path):
                return super().send_head()
            size = os.path.getsize(path)
            start = int(m.group(1))
            end = min(int(m.group(2) or size - 1), size - 1)
            if start > end:
                self.send_error(416)
                return None
            f = open(path, "rb")
            f.seek(start)
            self.send_response(206)
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            # weights go to the GPU once: keep them out of the browser's disk cache
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.remaining = end - start + 1
            return f

        def copyfile(self, source, outputfile):
            left = getattr(self, "remaining", None)
            if left is None:
                return super().copyfile(source, outputfile)
            while left > 0:
                chunk = source.read(min(left, 1 << 20))
                if not chunk:
                    break
                outputfile.write(chunk)
                left -= len(chunk)

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--web", default=os.path.join(os.path.dirname(__file__), "..", "web"))
    p.add_argument("--models", help="a directory of GGUF files served at /models/")
    a = p.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), handler(os.path.abspath(a.web), a.models))
    print(f"serving {os.path.abspath(a.web)} on http://127.0.0.1:{a.port}/")
    server.serve_forever()


if __name__ == "__main__":
    main()
