"""Load on a running `wmoe serve` (stdlib only): N client threads for S seconds, each
streaming chat completions, a fraction hanging up mid-stream, and malformed requests mixed
in, and now and then a connection that sends nothing (which the server must close after its
--idle-timeout). Prints the count of each outcome, any 5xx for a well-formed request, and the
server's resident memory (from /proc, by --pid) after warm-up and at the end.

    python3 tools/serve_load.py --url http://127.0.0.1:8080 --pid PID [--clients 8] [--seconds 600] [--idle-timeout 10]
"""

import argparse
import http.client
import json
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--seconds", type=float, default=600)
ap.add_argument("--idle-timeout", type=float, default=10, help="the server's --idle-timeout")
args = ap.parse_args()
u = urllib.parse.urlparse(args.url)
counts = Counter()
lock = threading.Lock()
stop_at = time.time() + args.seconds


def rss_kib():
    for line in open(f"/proc/{args.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def note(what):
    with lock:
        counts[what] += 1


MALFORMED = ['{"messages": [', '[1]', '{"messages": "x"}', '{"messages": [{"role": "user", "content": "a"}], "n": 4}',
             '{"messages": [{"role": "user", "content": "a"}], "temperature": "hot"}']


def silent_connection():
    """Connects, sends nothing, and notes whether the server closed it within its idle timeout
    (plus 5 s of slack for a loaded machine)."""
    s = socket.create_connection((u.hostname, u.port))
    s.settimeout(args.idle_timeout + 5)
    try:
        note("silent closed" if s.recv(1) == b"" else "silent answered")
    except socket.timeout:
        note("silent kept open (!)")
    except OSError:
        note("silent closed")
    finally:
        s.close()


def client(seed):
    rng = random.Random(seed)
    while time.time() < stop_at:
        if rng.random() < 0.02:
            silent_connection()
            continue
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        try:
            if rng.random() < 0.15:
                c.request("POST", "/v1/chat/completions", rng.choice(MALFORMED), {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                note(f"malformed {r.status}")
                continue
            body = {"messages": [{"role": "user", "content": "word " * rng.randint(1, 200)}],
                    "max_tokens": rng.randint(1, 64), "stream": True, "temperature": 0.8}
            c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status >= 500:
                note(f"well-formed {r.status} (5xx!)")
                r.read()
                continue
            hang_up = rng.random() < 0.3
            for i, line in enumerate(r):
                if hang_up and i > rng.randint(1, 10):
                    break
            note("disconnected" if hang_up else f"streamed {r.status}")
        except Exception as e:  # a server error shows as a connection failure
            note(f"error {type(e).__name__}")
        finally:
            c.close()


threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
for t in threads:
    t.start()
time.sleep(min(60, args.seconds / 5))
warm = rss_kib()
for t in threads:
    t.join()
end = rss_kib()
time.sleep(2)
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("GET", "/metrics")
metrics = c.getresponse().read().decode()
running = [l for l in metrics.splitlines() if l.startswith(("wmoe_requests_running", "wmoe_requests_queued", "wmoe_requests_total"))]
print(json.dumps(dict(counts), indent=1))
print(f"RSS after warm-up {warm} KiB, at the end {end} KiB ({100 * (end - warm) / warm:+.1f}%)")
print("\n".join(running))
