"""A live test camera for `vbw bench reconnect`: a GStreamer RTSP server on one port.

Not imported by vbw: `vbw.bench.reconnect` runs it as a script with Debian's /usr/bin/python3,
which has the GStreamer bindings (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-rtsp):

    /usr/bin/python3 vbw/bench/rtsp_camera.py --port 8554 --mount cam1

Each mount is a live moving-ball picture encoded like a camera does it (x264, zerolatency, a key
frame every second). Prints "READY <port>" on stdout once the port listens; SIGTERM/SIGINT stop
it, and a SIGKILL is the camera losing power.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

REQUIRED_ELEMENTS = ("videotestsrc", "x264enc", "rtph264pay")


def launch_line(width: int, height: int, fps: int) -> str:
    return (
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate={fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--mount", action="append", default=[], help="mount name, e.g. cam1 (repeatable)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--check", action="store_true", help="only check that the camera can run here")
    args = ap.parse_args()
    Gst.init(None)
    missing = [e for e in REQUIRED_ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name in args.mount or ["cam1"]:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_shared(True)  # one encoder per mount, like a camera's single sensor
        factory.set_launch(launch_line(args.width, args.height, args.fps))
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
