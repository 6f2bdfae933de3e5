r"""A small, deterministic, procedurally generated skeleton-action dataset (demo and tests).

  python -m data_prep.synthetic --out_dir=/tmp/tfds [--num_train=40] [--num_test=15] [--seed=0]
      [--num_classes=12] [--num_frames=N] [--num_persons=2] [--file_format=array_record]

Twelve actions with natural-language names are animated on a 3D stick figure (two-link inverse
kinematics for arms and legs, a bending torso) and projected to 2D COCO-17 pixel coordinates.
Every clip varies: 30-120 frames, image size, body size and position, proportions, camera yaw
(+-60 deg) and roll, tempo, phase, amplitude, the acting side (left/right), stance, where idle
hands rest, keypoint noise, detection scores, occlusion spans with low scores and dropped joints
stored as (0, 0) with score 0. About 30% of clips have a second, idle person (M = 2; person 0
is the actor).

The classes are told apart by how the body moves over time rather than where one joint sits on
average: several pairs share their static poses (sitting down / standing up are time reverses
of each other; waving / touching head, clapping / punching, raising both arms / jumping jacks
occupy similar places), and mirroring the acting side blurs single-joint positions further.
tests/test_data_prep.py checks that a nearest-centroid classifier on any single joint's mean
position stays far below a 1-nearest-neighbour classifier on whole trajectories.

Deterministic: each clip draws from its own generator seeded by (seed, split, index, label), so
the same seed gives identical clips, independent of how many clips are requested. Smaller demo
variants: the first N classes only, a fixed number of frames (evenly resampled from the full
motion), single-person clips only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import flags

from data_prep import cli_common, tfds_writer
from skclip_jax import command_line

NAME = "synthetic_actions"
# Bump when the generated clips change, so cached datasets are not reused across versions.
GENERATOR_VERSION = 1
FPS = 30.0
CLASS_NAMES = (
    "waving hand",
    "jumping jacks",
    "squatting",
    "kicking",
    "punching",
    "bowing",
    "walking",
    "clapping",
    "raising both arms",
    "touching head",
    "sitting down",
    "standing up",
)
_SPLIT_CODES = {"train": 0, "test": 1}
_IMAGE_SHAPES = ((240, 320), (360, 480), (480, 640), (720, 1280), (1080, 1920))

# COCO-17 indices.
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 11, 12, 13, 14, 15, 16
# Sides: +1 = the person's left (+x in the body frame), -1 = right.
SIDES = (1.0, -1.0)


class _Body:
    """Per-clip body proportions (units: roughly body heights) and rest-pose style."""

    def __init__(self, rng: np.random.Generator):
        k = rng.uniform(0.93, 1.07)
        self.hip_w = 0.085 * k
        self.shoulder_w = 0.13 * rng.uniform(0.9, 1.1)
        self.torso = 0.30 * rng.uniform(0.95, 1.05)
        self.upper_arm = 0.17 * k
        self.forearm = 0.16 * k
        self.thigh = 0.245 * k
        self.shin = 0.245 * k
        self.stance = rng.uniform(0.06, 0.13)
        # Where each idle hand rests (relative to its shoulder), so that an idle arm's position
        # says little about the action: hanging, on the hip, across the belly, behind the back.
        self.rest_wrist = {}
        for s in SIDES:
            style = rng.choice(4, p=[0.55, 0.2, 0.15, 0.1])
            self.rest_wrist[s] = np.array(
                [
                    [s * rng.uniform(0.02, 0.07), -0.31, 0.03],
                    [s * 0.03, -0.27, -0.03],
                    [-s * 0.10, -0.22, 0.12],
                    [s * 0.0, -0.28, -0.09],
                ][style]
            )
        self.stand_h = (self.thigh + self.shin) * 0.985


def _two_link_ik(
    root: np.ndarray, target: np.ndarray, l1: float, l2: float, pole: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Middle and end joint of a two-segment limb reaching for target, bending toward pole.

    Args:
      root, target: [T, 3]; pole: [3] or [T, 3], the direction the elbow/knee points to.

    Returns:
      (middle joint, end joint), [T, 3] each; the end joint stops short of unreachable targets.
    """
    delta = target - root
    dist = np.linalg.norm(delta, axis=-1, keepdims=True)
    u = delta / np.maximum(dist, 1e-9)
    d = np.clip(dist, abs(l1 - l2) + 1e-3, (l1 + l2) * 0.999)
    a = (l1**2 - l2**2 + d**2) / (2 * d)
    h = np.sqrt(np.maximum(l1**2 - a**2, 0.0))
    pole = np.broadcast_to(pole, root.shape)
    q = pole - np.sum(pole * u, axis=-1, keepdims=True) * u
    # A pole parallel to the limb gives no bend direction: fall back to "backward".
    fallback = np.broadcast_to(np.array([0.0, 0.0, -1.0]), root.shape)
    q_fb = fallback - np.sum(fallback * u, axis=-1, keepdims=True) * u
    q = np.where(np.linalg.norm(q, axis=-1, keepdims=True) < 1e-4, q_fb, q)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-9)
    return root + a * u + h * q, root + d * u


class _Motion:
    """What one class's animation function returns: per-frame targets for the stick figure.

    pelvis [T, 3] (world, y up, ground at 0), pitch [T] (torso forward bend, rad), twist [T]
    (shoulders turning left, rad), wrist[side]
    [T, 3] relative to that shoulder, ankle[side] [T, 3] in world coordinates (feet stay put
    while the pelvis moves), arm/leg poles.
    """

    def __init__(self, body: _Body, num_frames: int):
        zeros = np.zeros((num_frames, 3))
        self.pelvis = zeros + np.array([0.0, body.stand_h, 0.0])
        self.pitch = np.zeros(num_frames)
        self.twist = np.zeros(num_frames)  # Shoulder-line rotation about the vertical (rad).
        self.wrist = {s: zeros + body.rest_wrist[s] for s in SIDES}
        self.ankle = {s: zeros + np.array([s * body.stance, 0.0, 0.0]) for s in SIDES}
        self.arm_pole = {s: np.array([s * 0.5, -0.4, -1.0]) for s in SIDES}
        self.leg_pole = {s: np.array([s * 0.15, 0.0, 1.0]) for s in SIDES}


class _Ctx:
    """Per-clip randomness shared by the animation functions."""

    def __init__(self, rng: np.random.Generator, num_frames: int):
        self.rng = rng
        self.num_frames = num_frames
        self.speed = rng.uniform(0.75, 1.35)
        # Seconds, with a smooth random tempo drift so cycles are not perfectly regular.
        frames = np.arange(num_frames)
        drift = 0.08 * np.sin(
            2 * np.pi * frames / num_frames * rng.uniform(0.3, 1.2) + rng.uniform(0, 6.3)
        )
        self.t = frames / FPS * self.speed * (1.0 + drift)
        self.side = float(rng.choice(SIDES))  # Acting side for one-sided actions.
        self.amp = rng.uniform(0.75, 1.2)

    def phase(self, lo_hz: float, hi_hz: float) -> np.ndarray:
        return 2 * np.pi * self.rng.uniform(lo_hz, hi_hz) * self.t + self.rng.uniform(0, 2 * np.pi)

    def progress(self) -> np.ndarray:
        """A one-shot transition 0 -> 1 starting somewhere in the first half of the clip."""
        n = self.num_frames
        start = self.rng.uniform(0.08, 0.45) * n
        dur = self.rng.uniform(0.25, 0.45) * n
        x = np.clip((np.arange(n) - start) / dur, 0.0, 1.0)
        return x * x * (3 - 2 * x)

    def bump(self) -> np.ndarray:
        """Up, hold, down once (0 -> 1 -> 0)."""
        n = self.num_frames
        up = self.rng.uniform(0.05, 0.3) * n
        rise = self.rng.uniform(0.12, 0.25) * n
        hold = self.rng.uniform(0.1, 0.35) * n
        idx = np.arange(n)
        a = np.clip((idx - up) / rise, 0, 1)
        b = np.clip((idx - up - rise - hold) / rise, 0, 1)
        x = a - b
        return x * x * (3 - 2 * x)


def _lerp(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    return a + (b - a) * s[:, None]


def _waving(m: _Motion, c: _Ctx, body: _Body) -> None:
    ph = c.phase(1.2, 2.4)
    s = c.side
    n = c.num_frames
    wrist = np.stack(
        [
            s * (0.14 + 0.11 * c.amp * np.sin(ph)),
            0.22 + 0.03 * np.cos(2 * ph),
            np.full(n, 0.06),
        ],
        axis=-1,
    )
    m.wrist[s] = wrist
    m.arm_pole[s] = np.array([s * 1.0, -1.0, -0.2])


def _jumping_jacks(m: _Motion, c: _Ctx, body: _Body) -> None:
    ph = c.phase(0.8, 1.4)
    open_ = (1 - np.cos(ph)) / 2  # 0 closed, 1 open.
    hop = 0.045 * c.amp * np.abs(np.sin(ph))
    for s in SIDES:
        ang = np.deg2rad(15 + 150 * open_)
        m.wrist[s] = 0.32 * np.stack(
            [s * np.sin(ang), -np.cos(ang), np.full_like(ang, 0.08)], axis=-1
        )
        m.arm_pole[s] = np.array([0.0, 0.0, -1.0])
        m.ankle[s] = np.stack([s * (0.04 + 0.15 * open_ * c.amp), hop, np.zeros_like(hop)], axis=-1)
    m.pelvis[:, 1] = body.stand_h - 0.02 * open_ + hop


def _squatting(m: _Motion, c: _Ctx, body: _Body) -> None:
    down = (1 - np.cos(c.phase(0.3, 0.7))) / 2
    depth = c.rng.uniform(0.16, 0.24) * c.amp
    arms = c.rng.uniform(0.3, 1.0)
    m.pelvis[:, 1] = body.stand_h - depth * down
    m.pelvis[:, 2] = -0.10 * down
    m.pitch = 0.5 * down
    for s in SIDES:
        m.wrist[s] = _lerp(m.wrist[s], np.array([s * 0.03, -0.04, 0.30]), arms * down)


def _kicking(m: _Motion, c: _Ctx, body: _Body) -> None:
    kick = np.maximum(np.sin(c.phase(0.5, 1.0)), 0.0) ** 2
    s = c.side
    m.ankle[s] = _lerp(m.ankle[s], np.array([s * 0.04, 0.30 * c.amp, 0.40]), kick)
    m.pitch = -0.15 * kick
    for side in SIDES:
        m.wrist[side] = _lerp(m.wrist[side], np.array([side * 0.16, -0.22, 0.06]), kick)


def _punching(m: _Motion, c: _Ctx, body: _Body) -> None:
    # Alternating straight punches at face height from a guard under the chin; the shoulders
    # turn into each punch.
    ph = c.phase(0.6, 1.2)
    for i, s in enumerate(SIDES):
        ext = np.maximum(np.sin(ph + np.pi * i), 0.0) ** 2 * c.amp
        guard = np.array([-s * 0.06, 0.03, 0.13])
        punch = np.array([-s * 0.03, 0.05, 0.34])
        m.wrist[s] = _lerp(np.broadcast_to(guard, (c.num_frames, 3)), punch, ext)
        m.arm_pole[s] = np.array([s * 1.0, -1.0, -0.3])
        # The left shoulder (s = +1) goes forward when the left fist does: twist < 0.
        m.twist = m.twist - s * 0.35 * ext
    m.ankle[c.side][:, 2] += 0.12
    m.pelvis[:, 1] -= 0.02


def _bowing(m: _Motion, c: _Ctx, body: _Body) -> None:
    bow = np.maximum(np.sin(c.phase(0.25, 0.5)), 0.0) ** 1.5
    m.pitch = c.rng.uniform(0.6, 1.1) * bow
    m.pelvis[:, 2] = -0.06 * bow
    for s in SIDES:
        m.wrist[s][:, 2] += 0.06 * bow


def _walking(m: _Motion, c: _Ctx, body: _Body) -> None:
    ph = c.phase(0.8, 1.1)
    stride = 0.17 * c.amp
    # Half the distance real steps would cover, so walkers mostly stay in the picture.
    forward = stride * (ph - ph[0]) / np.pi
    for i, s in enumerate(SIDES):
        p = ph + np.pi * i
        z = forward + stride * np.sin(p)
        lift = 0.07 * np.maximum(np.cos(p), 0.0)
        m.ankle[s] = np.stack([np.full_like(z, s * 0.07), lift, z], axis=-1)
        m.wrist[s][:, 2] = 0.03 - 0.18 * c.amp * np.sin(p)
    m.pelvis[:, 2] = forward
    m.pelvis[:, 1] = body.stand_h - 0.02 - 0.012 * np.abs(np.cos(ph))


def _clapping(m: _Motion, c: _Ctx, body: _Body) -> None:
    together = (1 + np.cos(c.phase(1.8, 3.2))) / 2
    height = c.rng.uniform(-0.16, -0.04)
    for s in SIDES:
        x = -s * body.shoulder_w * 0.97 + s * 0.16 * c.amp * (1 - together)
        m.wrist[s] = np.stack([x, np.full_like(x, height), np.full_like(x, 0.24)], axis=-1)
        m.arm_pole[s] = np.array([s * 1.0, -0.8, -0.3])


def _raising_arms(m: _Motion, c: _Ctx, body: _Body) -> None:
    up = c.progress()
    ang = np.deg2rad(12 + 158 * up)
    via_side = c.rng.random() < 0.5
    for s in SIDES:
        if via_side:
            m.wrist[s] = 0.32 * np.stack(
                [s * np.sin(ang), -np.cos(ang), np.full_like(ang, 0.05)], axis=-1
            )
            m.arm_pole[s] = np.array([0.0, 0.0, -1.0])
        else:
            m.wrist[s] = 0.32 * np.stack(
                [np.full_like(ang, s * 0.12), -np.cos(ang), np.sin(ang)], axis=-1
            )
            m.arm_pole[s] = np.array([s * 1.0, 0.0, 0.0])


def _touching_head(m: _Motion, c: _Ctx, body: _Body) -> None:
    reach = c.bump()
    s = c.side
    head = np.array([-s * body.shoulder_w * 0.8, 0.17, 0.02])
    m.wrist[s] = _lerp(m.wrist[s], head, reach)
    m.arm_pole[s] = np.array([s * 1.0, -0.3, 0.2])


def _sit(m: _Motion, body: _Body, sit: np.ndarray) -> None:
    seat = body.shin * 1.02
    m.pelvis[:, 1] = body.stand_h + (seat - body.stand_h) * sit
    m.pelvis[:, 2] = -0.17 * sit
    # Lean forward while moving between standing and sitting, upright at both ends.
    m.pitch = 0.55 * np.sin(np.pi * sit) + 0.08 * sit
    for s in SIDES:
        m.ankle[s][:, 2] = 0.04
        m.wrist[s] = _lerp(m.wrist[s], np.array([s * 0.05, -0.24, 0.20]), sit)


def _sitting_down(m: _Motion, c: _Ctx, body: _Body) -> None:
    _sit(m, body, c.progress())


def _standing_up(m: _Motion, c: _Ctx, body: _Body) -> None:
    _sit(m, body, 1.0 - c.progress())


_ANIMATIONS: dict[str, Callable[[_Motion, _Ctx, _Body], None]] = {
    "waving hand": _waving,
    "jumping jacks": _jumping_jacks,
    "squatting": _squatting,
    "kicking": _kicking,
    "punching": _punching,
    "bowing": _bowing,
    "walking": _walking,
    "clapping": _clapping,
    "raising both arms": _raising_arms,
    "touching head": _touching_head,
    "sitting down": _sitting_down,
    "standing up": _standing_up,
}


def _skeleton(m: _Motion, body: _Body) -> np.ndarray:
    """Forward kinematics: motion targets -> COCO-17 joints [T, 17, 3] (x left, y up, z fwd)."""
    n = m.pelvis.shape[0]
    joints = np.zeros((n, 17, 3))
    up = np.stack([np.zeros(n), np.cos(m.pitch), np.sin(m.pitch)], axis=-1)
    fwd = np.stack([np.zeros(n), -np.sin(m.pitch), np.cos(m.pitch)], axis=-1)
    x = np.array([1.0, 0.0, 0.0])
    neck = m.pelvis + body.torso * up
    nose = neck + 0.11 * up + 0.05 * fwd
    joints[:, NOSE] = nose
    for s, eye, ear in ((1.0, L_EYE, L_EAR), (-1.0, R_EYE, R_EAR)):
        joints[:, eye] = nose + 0.03 * up + s * 0.03 * x - 0.015 * fwd
        joints[:, ear] = nose + 0.01 * up + s * 0.07 * x - 0.07 * fwd
    for s, sh, el, wr, hip, kn, an in (
        (1.0, L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE),
        (-1.0, R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE),
    ):
        twist = np.stack([np.cos(m.twist), np.zeros(n), -np.sin(m.twist)], axis=-1)
        shoulder = neck + s * body.shoulder_w * twist
        joints[:, sh] = shoulder
        joints[:, el], joints[:, wr] = _two_link_ik(
            shoulder, shoulder + m.wrist[s], body.upper_arm, body.forearm, m.arm_pole[s]
        )
        hip_pt = m.pelvis + s * body.hip_w * x
        joints[:, hip] = hip_pt
        joints[:, kn], joints[:, an] = _two_link_ik(
            hip_pt, m.ankle[s], body.thigh, body.shin, m.leg_pole[s]
        )
    return joints


def _idle(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """A bystander standing around (3D joints)."""
    body = _Body(rng)
    m = _Motion(body, num_frames)
    t = np.arange(num_frames) / FPS
    m.pelvis[:, 0] = 0.015 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 6.3))
    for s in SIDES:
        if rng.random() < 0.3:  # Hands on hips or crossed in front.
            m.wrist[s] = m.wrist[s] + np.array([s * 0.05, 0.12, 0.08 * rng.random()])
    return _skeleton(m, body)


def _project(
    joints: np.ndarray, rng: np.random.Generator, yaw: float, px_per_unit: float, origin: tuple
) -> np.ndarray:
    """Weak-perspective camera: yaw about the vertical, small roll; pixels (x right, y down)."""
    c, s = np.cos(yaw), np.sin(yaw)
    xr = joints[..., 0] * c + joints[..., 2] * s
    depth = -joints[..., 0] * s + joints[..., 2] * c
    # Closer (larger depth toward the camera) looks bigger, judged per frame at the pelvis.
    scale = px_per_unit / (1.0 - np.clip(depth.mean(axis=-1, keepdims=True), -2, 2) / 8.0)
    u = origin[0] + scale * xr
    v = origin[1] - scale * joints[..., 1]
    roll = np.deg2rad(rng.uniform(-4, 4))
    cu, cv = u.mean(), v.mean()
    ur = cu + (u - cu) * np.cos(roll) - (v - cv) * np.sin(roll)
    vr = cv + (u - cu) * np.sin(roll) + (v - cv) * np.cos(roll)
    return np.stack([ur, vr], axis=-1)


def _detections(
    rng: np.random.Generator, xy: np.ndarray, body_px: float, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """Adds detector-like noise, scores, occlusions and dropped joints to [T, 17, 2] pixels."""
    n = xy.shape[0]
    noise = rng.normal(0, rng.uniform(0.004, 0.012) * body_px, xy.shape)
    # Smooth part of the noise: slow wobble per joint.
    t = np.arange(n)[:, None, None] / FPS
    wobble = rng.normal(0, 0.006 * body_px, (1, 17, 2)) * np.sin(
        2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * np.pi, (1, 17, 1))
    )
    xy = xy + noise + wobble
    score = np.clip(rng.uniform(lo, hi) - 0.15 * np.abs(rng.normal(0, 1, (n, 17))), 0.05, 1.0)
    # Occlusion spans: low scores and poor positions for one joint over a stretch of frames.
    for _ in range(rng.poisson(1.0)):
        j = rng.integers(17)
        a = rng.integers(n)
        b = min(n, a + rng.integers(3, max(4, n // 3)))
        score[a:b, j] = rng.uniform(0.0, 0.2, b - a)
        xy[a:b, j] += rng.normal(0, 0.05 * body_px, (b - a, 2))
    # Dropped joints: stored as (0, 0) with score 0, the PYSKL convention for "missing".
    dropped = rng.random((n, 17)) < rng.uniform(0.0, 0.06)
    xy[dropped] = 0.0
    score[dropped] = 0.0
    return xy, score


def make_clip(
    label: int, rng: np.random.Generator, num_frames: int | None = None, num_persons: int = 2
) -> dict[str, Any]:
    """One PYSKL-style annotation (without frame_dir) for class `label`.

    Args:
      label: index into CLASS_NAMES.
      rng: the clip's own generator.
      num_frames: if set, the clip (natural length 30-120 frames) is resampled to exactly this
        many evenly spaced frames, so short demo clips still show the whole motion.
      num_persons: at most this many people (1 or 2); the second one is an idle bystander.
    """
    length = int(rng.integers(30, 121))
    h, w = _IMAGE_SHAPES[rng.integers(len(_IMAGE_SHAPES))]
    body = _Body(rng)
    ctx = _Ctx(rng, length)
    motion = _Motion(body, length)
    _ANIMATIONS[CLASS_NAMES[label]](motion, ctx, body)
    actor = _skeleton(motion, body)
    # Walking moves along the body's forward axis; keep the clip centred on its mid-point.
    actor[..., 2] -= motion.pelvis[:, 2].mean()
    yaw = np.deg2rad(rng.uniform(-60, 60))
    body_px = rng.uniform(0.45, 0.8) * h
    origin = (rng.uniform(0.35, 0.65) * w, rng.uniform(0.82, 0.95) * h)
    people = [(actor, yaw, 1.0, (0.7, 1.0))]
    if rng.random() < 0.3 and num_persons > 1:
        other = _idle(rng, length)
        other[..., 0] += rng.choice(SIDES) * rng.uniform(0.5, 0.9)
        other[..., 2] -= rng.uniform(0.0, 0.5)
        people.append(
            (other, yaw + np.deg2rad(rng.uniform(-30, 30)), rng.uniform(0.85, 1.1), (0.35, 0.7))
        )
    keypoints, scores = [], []
    for joints, person_yaw, size, (lo, hi) in people:
        xy = _project(joints, rng, person_yaw, body_px * size, origin)
        xy, score = _detections(rng, xy, body_px, lo, hi)
        keypoints.append(xy)
        scores.append(score)
    keypoint = np.stack(keypoints).astype(np.float32)
    keypoint_score = np.stack(scores).astype(np.float32)
    if num_frames is not None:
        frames = np.round(np.linspace(0, length - 1, num_frames)).astype(int)
        keypoint, keypoint_score = keypoint[:, frames], keypoint_score[:, frames]
    return {
        "label": label,
        "img_shape": (int(h), int(w)),
        "total_frames": keypoint.shape[1],
        "keypoint": keypoint,
        "keypoint_score": keypoint_score,
    }


def generate_clips(
    split: str,
    num_per_class: int,
    seed: int = 0,
    num_classes: int | None = None,
    num_frames: int | None = None,
    num_persons: int = 2,
) -> list[dict[str, Any]]:
    """PYSKL-style annotations for one split, classes interleaved (clip k has label k % C).

    Args:
      split: "train" or "test".
      num_per_class: clips per class.
      seed: generator seed.
      num_classes: use only the first C of CLASS_NAMES (default all 12).
      num_frames: fixed clip length (see make_clip); default: natural lengths 30-120.
      num_persons: 1 for single-person clips only, 2 for an occasional bystander.

    Returns:
      Annotation dicts; frame_dir is "<split>_<k:05d>", which does not reveal the label.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    num_classes = len(CLASS_NAMES) if num_classes is None else num_classes
    if not 1 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [1, {len(CLASS_NAMES)}], got {num_classes}")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if num_persons not in (1, 2):
        raise ValueError(f"num_persons must be 1 or 2, got {num_persons}")
    clips = []
    for i in range(num_per_class):
        for label in range(num_classes):
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], i, label])
            clip = make_clip(label, rng, num_frames, num_persons)
            clip["frame_dir"] = f"{split}_{len(clips):05d}"
            clips.append(clip)
    return clips


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_train_per_class: int = 40,
    num_test_per_class: int = 15,
    seed: int = 0,
    file_format: str = "array_record",
    *,
    num_classes: int | None = None,
    num_frames: int | None = None,
    num_persons: int = 2,
    overwrite: bool = False,
    progress: bool = False,
) -> str:
    """Writes (or reuses) the synthetic TFDS dataset under out_dir.

    An existing dataset made with the same arguments is reused rather than rebuilt, so the demo
    and tests can call this freely; different arguments need overwrite=True.

    Args:
      out_dir: root data directory.
      num_train_per_class, num_test_per_class: clips per class in "train" and "test".
      seed: generator seed (same seed -> byte-identical records).
      file_format: "array_record" or "tfrecord".
      num_classes, num_frames, num_persons: see generate_clips (smaller demo variants).
      overwrite: replace a dataset made with other arguments.
      progress: show tqdm bars.

    Returns:
      The dataset version directory, `<out_dir>/synthetic_actions/1.0.0`.
    """
    params = {
        "num_train_per_class": num_train_per_class,
        "num_test_per_class": num_test_per_class,
        "seed": seed,
        "file_format": file_format,
        "num_classes": num_classes or len(CLASS_NAMES),
        "num_frames": num_frames,
        "num_persons": num_persons,
        "generator_version": GENERATOR_VERSION,
    }
    path = tfds_writer.dataset_path(out_dir, NAME)
    summary_file = os.path.join(path, tfds_writer.SUMMARY_FILENAME)
    if not overwrite and os.path.exists(summary_file):
        with open(summary_file, encoding="utf-8") as f:
            if json.load(f).get("generator") == params:
                return path
    # TFDS cannot store an empty split: a split with zero clips per class is left out.
    splits = {
        s: n for s, n in (("train", num_train_per_class), ("test", num_test_per_class)) if n > 0
    }
    class_names = CLASS_NAMES[: params["num_classes"]]

    def clips(split: str):
        for ann in generate_clips(
            split, splits[split], seed, len(class_names), num_frames, num_persons
        ):
            yield tfds_writer.Clip(f"<synthetic seed={seed}>", ann)

    path, _ = tfds_writer.write_keypoint_dataset(
        out_dir=out_dir,
        name=NAME,
        class_names=class_names,
        splits={s: clips(s) for s in splits},
        sources=[f"data_prep.synthetic (seed={seed})"],
        file_format=file_format,
        overwrite=overwrite,
        split_sizes={s: n * len(class_names) for s, n in splits.items()},
        description="Procedurally generated 2D COCO-17 skeleton actions (data_prep.synthetic).",
        extra_summary={"created_by": "data_prep.synthetic", "generator": params},
        progress=progress,
    )
    return path


PROGRAM = "data_prep.synthetic"


def main(argv: Sequence[str]) -> None:
    command_line.check_no_arguments(argv, PROGRAM)
    f = flags.FLAGS

    def convert():
        path = make_synthetic_dataset(
            f.out_dir,
            f.num_train,
            f.num_test,
            f.seed,
            f.file_format,
            num_classes=f.num_classes,
            num_frames=f.num_frames,
            num_persons=f.num_persons,
            overwrite=f.overwrite,
            progress=True,
        )
        with open(os.path.join(path, tfds_writer.SUMMARY_FILENAME), encoding="utf-8") as fp:
            return json.load(fp)

    cli_common.run_tool(convert, PROGRAM)


if __name__ == "__main__":
    cli_common.define_output_flags(skip_bad=False)
    flags.DEFINE_integer("num_train", 40, "Training clips per class.", lower_bound=0)
    flags.DEFINE_integer("num_test", 15, "Test clips per class.", lower_bound=0)
    flags.DEFINE_integer("seed", 0, "Generator seed; same seed -> identical clips.")
    flags.DEFINE_integer("num_classes", None, "Use only the first N of the 12 classes.")
    flags.DEFINE_integer("num_frames", None, "Resample every clip to this many frames.")
    flags.DEFINE_integer("num_persons", 2, "1: single-person clips only; 2: some bystanders.")
    flags.mark_flags_as_required(["out_dir"])
    cli_common.run_app(main, PROGRAM)
