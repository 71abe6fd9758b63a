"""A GStreamer RTSP server serving H.264 mp4 files as mounts, for tests. Run with Debian's
/usr/bin/python3 (python3-gi), not the venv:

    /usr/bin/python3 tests/services/gst_rtsp_server.py --port 8554 --mount cam1=/tmp/a.mp4 --mount cam2=/tmp/b.mp4

Each client connection plays its file from the start at real-time pace, like a camera
(`filesrc ! qtdemux ! h264parse ! rtph264pay`); at the end the stream ends (EOS). Prints
"READY <port>" on stdout once it listens. SIGTERM/SIGINT stop it.
"""

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mount", action="append", default=[], help="NAME=PATH of an H.264 mp4")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mount:
        name, _, path = spec.partition("=")
        if not Path(path).is_file():
            print(f"no such file: {path}", file=sys.stderr)
            return 2
        factory = GstRtspServer.RTSPMediaFactory()
        # Not shared: every connection gets its own pipeline from the file's start.
        factory.set_shared(False)
        factory.set_launch(
            f'( filesrc location="{path}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'
        )
        mounts.add_factory("/" + name.strip("/"), factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
