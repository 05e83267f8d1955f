"""A real RTSP server for the camera tests and bench: GStreamer's (gst-rtsp-server, Debian's
``gir1.2-gst-rtsp-server-1.0``), run by the *system* Python, whose ``python3-gi`` reaches
Debian's GStreamer (the project's venv has no ``gi``): ``/usr/bin/python3 tests/rtsp_server.py``.

It serves, at ``/live``, an H.264 stream that a producer (tests/streams.py, in the venv: PyAV
plays a video in a loop, or the bench's stamped frames) sends it as RTP over UDP on loopback;
with ``--user`` and ``--password`` only to clients that authenticate (Basic), for the
wrong-credentials test. The mount is one shared pipeline ``udpsrc ! rtph264depay !
rtph264pay``: clients joining late start at the next key frame (the producer sends SPS/PPS
with each).

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --udp-port 5004 [--user U --password P]
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

RTP_CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"


def relay(udp_port: int) -> GstRtspServer.RTSPMediaFactory:
    """A shared mount relaying the H.264 RTP that arrives on ``udp_port``."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( udpsrc address=127.0.0.1 port={udp_port} caps="{RTP_CAPS}" buffer-size=4194304 '
                       "! rtph264depay ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)  # interleaved: what the service asks for
    return factory


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--udp-port", type=int, required=True)
    parser.add_argument("--user", help="ask every client for this user (Basic authentication)")
    parser.add_argument("--password")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    live = relay(args.udp_port)
    mounts.add_factory("/live", live)
    if args.user:  # every client must authenticate: 401 with a challenge, then the credentials are checked
        auth = GstRtspServer.RTSPAuth()
        viewer = GstRtspServer.RTSPToken()
        viewer.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), viewer)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(Gst.Structure.new_from_string(
            "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        live.set_permissions(permissions)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"rtsp://127.0.0.1:{args.port}/live", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
