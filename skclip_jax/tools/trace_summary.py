"""Where a profiled step's device time went: the heaviest kernels of a ``jax.profiler`` trace, as text.

``python -m skclip_jax.tools.bench --trace_dir=DIR`` writes a trace (an ``*.xplane.pb`` under
``DIR/plugins/profile/<run>/``); TensorBoard's profile plugin shows it, but a GPU lease leaves no time for a
browser, so this prints the numbers that matter at once: for each device plane, each line's (stream's)
busy time, and the kernels summed by name, heaviest first.

    python -m skclip_jax.tools.trace_summary DIR_OR_FILE [--top=30] [--plane=/device:]

Reading the trace needs the XPlane protobuf, which TensorFlow ships (``tensorflow.tsl``) as does ``tsl``.
"""

import argparse
import collections
import glob
import os
import sys


def _xplane_pb2():
    for name in ("tsl.profiler.protobuf.xplane_pb2", "tensorflow.tsl.profiler.protobuf.xplane_pb2"):
        try:
            return __import__(name, fromlist=["XSpace"])
        except ImportError:
            continue
    raise SystemExit(
        "trace_summary: reading a trace needs tensorflow (or tsl) for the XPlane protobuf"
    )


def find_trace(path: str) -> str:
    """The newest ``*.xplane.pb`` at or under ``path``."""
    if os.path.isfile(path):
        return path
    found = glob.glob(os.path.join(path, "**", "*.xplane.pb"), recursive=True)
    if not found:
        raise SystemExit(f"trace_summary: no *.xplane.pb under {path}")
    return max(found, key=os.path.getmtime)


def summarise(path: str, plane_prefix: str = "/device:") -> list[dict]:
    """Per plane whose name starts with ``plane_prefix`` (else every plane): its lines' busy time (the sum of
    their events' durations: exact for a GPU stream, whose kernels do not nest; on host threads nested events
    count once per level, so busy can exceed span) and event count, and its events' total time by name.

    Returns:
      ``[{"plane", "lines": [{"line", "busy_s", "span_s", "events"}], "by_name": [(name, s, count)]}]``,
      ``by_name`` heaviest first.
    """
    space = _xplane_pb2().XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    planes = [p for p in space.planes if p.name.startswith(plane_prefix)] or list(space.planes)
    out = []
    for plane in planes:
        names = {k: (m.display_name or m.name) for k, m in plane.event_metadata.items()}
        by_name = collections.defaultdict(lambda: [0.0, 0])
        lines = []
        for line in plane.lines:
            if not line.events:
                continue
            busy = sum(e.duration_ps for e in line.events) * 1e-12
            start = min(e.offset_ps for e in line.events)
            end = max(e.offset_ps + e.duration_ps for e in line.events)
            lines.append(
                {
                    "line": line.display_name or line.name,
                    "busy_s": busy,
                    "span_s": (end - start) * 1e-12,
                    "events": len(line.events),
                }
            )
            for e in line.events:
                row = by_name[(line.display_name or line.name, names.get(e.metadata_id, "?"))]
                row[0] += e.duration_ps * 1e-12
                row[1] += 1
        ranked = sorted(((k, v[0], v[1]) for k, v in by_name.items()), key=lambda r: -r[1])
        out.append({"plane": plane.name, "lines": lines, "by_name": ranked})
    return out


def format_summary(planes: list[dict], top: int) -> str:
    text = []
    for p in planes:
        text.append(f"== {p['plane']}")
        for line in sorted(p["lines"], key=lambda r: -r["busy_s"]):
            text.append(
                f"  line {line['line'][:60]:60s} busy {line['busy_s']:9.4f} s  span {line['span_s']:9.4f} s  "
                f"{line['events']:7d} events"
            )
        text.append(f"  {'seconds':>9s} {'count':>6s}  line / name")
        for (line, name), s, n in p["by_name"][:top]:
            text.append(f"  {s:9.4f} {n:6d}  {line[:24]} / {name[:110]}")
    return "\n".join(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a trace directory (bench --trace_dir) or an .xplane.pb file")
    parser.add_argument("--top", type=int, default=30, help="kernels to list per plane")
    parser.add_argument("--plane", default="/device:", help="planes whose name starts with this")
    args = parser.parse_args(argv)
    path = find_trace(args.path)
    print(f"trace: {path}")
    print(format_summary(summarise(path, args.plane), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
