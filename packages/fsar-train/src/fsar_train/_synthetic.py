"""synthetic-actions: a few-shot action dataset of rendered motion programs, written as mp4 files.

Every class is a motion program; what the moving object looks like is drawn per video (shape,
colour, size, orientation, background texture, static distractor objects, speed, start position),
so appearance alone cannot tell classes apart and a method has to read the motion.

Grammar. Class names are composed from primitives, in the style of SSv2 labels:

- a **manner** (how the displacement unfolds over time; template with a ``{direction}`` slot):
  ``moving something {d}`` (constant speed), ``pushing something {d} until it stops`` (fast start,
  decelerates, stops part-way), ``moving something {d} and back`` (there and back),
  ``pretending to move something {d}`` (a small start that returns), ``moving something {d} faster
  and faster`` (accelerates);
- a **direction** (the path): ``from left to right``, ``from right to left``, ``up``, ``down``,
  ``towards the camera`` (grows), ``away from the camera`` (shrinks), ``clockwise`` and
  ``counterclockwise`` (an orbit);
- four **object behaviours** outside the product, always in meta-train: ``something falling down``
  (falls, bounces once, rests), ``something bouncing`` (three bounces), ``rotating something
  clockwise`` and ``rotating something counterclockwise`` (spins in place).

The 5 × 8 product gives 40 classes, plus 4 behaviours: 44. Split: manner m (0..4) and direction d
(0..7) go to meta-test when (d − 2m) mod 8 ∈ {4, 5}, to meta-val when it is 6, and to meta-train
otherwise, so every manner and every direction also occurs in meta-train with other partners: each
word of a meta-test name occurs in some meta-train name, but no meta-test (manner, direction) pair
is seen in training (29 / 5 / 10 classes).

Output (``root``): ``videos/<class_slug>/<video_id>.mp4`` (H.264 through PyAV), ``manifest.csv``
(one row per video: class, split, generated caption and the drawn appearance), ``splits/{train,
val,test}.txt`` in the public ``class/video_id`` format, and ``dataset.json`` (parameters, grammar,
class lists), written last. Re-running with the same parameters skips complete output; every file
is written to a temporary name and renamed.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import logging
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from fsar_features import atomic_path, atomic_write_json, atomic_write_text
from fsar_metric.errors import InputError
from fsar_train._config import SyntheticConfig
from fsar_train._progress import make_progress
from fsar_train._yuv import rgb_to_yuv420p

__all__ = [
    "DIRECTIONS",
    "MANNERS",
    "SyntheticClass",
    "SyntheticVideo",
    "generate_synthetic_actions",
    "render_video",
    "synthetic_classes",
    "synthetic_videos",
]

logger = logging.getLogger(__name__)

#: Version of the generator; part of the parameters, so changed programs never mix with old files.
GENERATOR_VERSION = 2

#: (manner key, name template).
MANNERS: tuple[tuple[str, str], ...] = (
    ("moving", "moving something {d}"),
    ("pushing", "pushing something {d} until it stops"),
    ("back", "moving something {d} and back"),
    ("pretending", "pretending to move something {d}"),
    ("faster", "moving something {d} faster and faster"),
)

#: (direction key, words).
DIRECTIONS: tuple[tuple[str, str], ...] = (
    ("right", "from left to right"),
    ("left", "from right to left"),
    ("up", "up"),
    ("down", "down"),
    ("towards", "towards the camera"),
    ("away", "away from the camera"),
    ("cw", "clockwise"),
    ("ccw", "counterclockwise"),
)

#: (behaviour key, class name): object behaviours outside the manner × direction product.
BEHAVIOURS: tuple[tuple[str, str], ...] = (
    ("falling", "something falling down"),
    ("bouncing", "something bouncing"),
    ("spin_cw", "rotating something clockwise"),
    ("spin_ccw", "rotating something counterclockwise"),
)

SHAPES = ("circle", "square", "triangle", "pentagon", "hexagon", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "orange": (240, 140, 30),
    "purple": (140, 60, 180),
    "cyan": (40, 200, 210),
    "magenta": (220, 50, 170),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (130, 80, 40),
    "pink": (245, 160, 190),
}
BACKGROUNDS = ("plain", "gradient", "checkered", "striped", "noisy")


@dataclass(frozen=True)
class SyntheticClass:
    """One class: its name, global index, split and the primitives it is made of."""

    index: int
    name: str
    split: str
    manner: str  # a MANNERS key, or "" for behaviours
    direction: str  # a DIRECTIONS key, or ""
    behaviour: str  # a BEHAVIOURS key, or ""

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "_")


def synthetic_classes() -> list[SyntheticClass]:
    """The 44 classes in index order (the product first, manner-major, then the behaviours).

    Example:
        >>> classes = synthetic_classes()
        >>> len(classes), classes[0].name, classes[0].split
        (44, 'moving something from left to right', 'train')
        >>> sorted({c.split for c in classes}), sum(c.split == "test" for c in classes)
        (['test', 'train', 'val'], 10)
    """
    classes = []
    for m, (manner, template) in enumerate(MANNERS):
        for d, (direction, words) in enumerate(DIRECTIONS):
            residue = (d - 2 * m) % len(DIRECTIONS)
            split = "test" if residue in (4, 5) else "val" if residue == 6 else "train"
            classes.append(SyntheticClass(len(classes), template.format(d=words), split, manner, direction, ""))
    for behaviour, name in BEHAVIOURS:
        classes.append(SyntheticClass(len(classes), name, "train", "", "", behaviour))
    return classes


@dataclass(frozen=True)
class SyntheticVideo:
    """Everything needed to render one video, drawn from its own seeded generator."""

    video_id: str
    class_index: int
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    stripe_rgb: tuple[int, int, int]
    radius: float  # pixels, before any scaling
    orientation: float  # radians
    background: str
    background_rgb: tuple[tuple[int, int, int], tuple[int, int, int]]
    distractors: tuple[tuple[str, float, float, float, float, tuple[int, int, int]], ...]  # shape, x, y, r, angle, rgb
    start: float  # clip fraction where the action starts
    duration: float  # clip fraction the action lasts
    x0: float  # start position (pixels)
    y0: float
    extent: float  # path length (pixels), orbit radius, or scale factor
    phase: float  # start angle of an orbit
    seed: int

    @property
    def speed(self) -> str:
        return "quickly" if self.duration < 0.7 else "slowly" if self.duration > 0.88 else "at a steady pace"


def _clip_rgb(rgb: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(rgb, 0, 255))
    return (r, g, b)


def _draw_spec(cls: SyntheticClass, video: int, config: SyntheticConfig) -> SyntheticVideo:
    """Sample the appearance and motion parameters of one video (pure function of its seeds)."""
    seed_words = [config.seed, cls.index, video, GENERATOR_VERSION]
    rng = np.random.default_rng(seed_words)
    size = config.size
    colour = str(rng.choice(list(COLOURS)))
    rgb = np.array(COLOURS[colour], dtype=float) + rng.uniform(-15, 15, 3)
    # Background colours far from the object's colour, so the object stays visible.
    while True:
        bg = rng.uniform(40, 215, size=(2, 3))
        if min(np.abs(bg - rgb).sum(1)) > 150:
            break
    stripe = 255.0 - rgb if np.abs(255.0 - 2 * rgb).sum() > 120 else np.array([128.0, 128.0, 128.0])
    radius = float(rng.uniform(0.07, 0.12) * size)
    distractors = []
    for _ in range(int(rng.integers(0, 4))):
        d_rgb = rng.uniform(30, 230, 3)
        distractors.append(
            (
                str(rng.choice(SHAPES)),
                float(rng.uniform(0.1, 0.9) * size),
                float(rng.uniform(0.1, 0.9) * size),
                float(rng.uniform(0.04, 0.08) * size),
                float(rng.uniform(0, 2 * math.pi)),
                _clip_rgb(d_rgb),
            )
        )
    duration = float(rng.uniform(0.55, 1.0))
    start = float(rng.uniform(0.0, 1.0 - duration))
    margin = 1.4 * radius
    direction = cls.direction
    phase = float(rng.uniform(0, 2 * math.pi))
    if direction in ("right", "left", "up", "down"):
        extent = float(rng.uniform(0.35, 0.55) * size)
        lo, hi = margin, size - margin - extent
        along = float(rng.uniform(lo, hi))
        across = float(rng.uniform(margin, size - margin))
        if direction == "right":
            x0, y0 = along, across
        elif direction == "left":
            x0, y0 = size - along, across
        elif direction == "down":
            x0, y0 = across, along
        else:
            x0, y0 = across, size - along
    elif direction in ("towards", "away"):
        extent = float(rng.uniform(1.9, 2.4)) if direction == "towards" else float(rng.uniform(0.4, 0.5))
        big = radius * max(extent, 1.0)
        x0, y0 = (float(v) for v in rng.uniform(big * 1.2, size - big * 1.2, 2))
        if direction == "away":
            radius *= 2.0  # starts close to the camera
    elif direction in ("cw", "ccw"):
        extent = float(rng.uniform(0.18, 0.27) * size)
        x0, y0 = (float(v) for v in rng.uniform(extent + margin, size - extent - margin, 2))
    else:  # behaviours
        extent = float(rng.uniform(0.35, 0.55) * size)
        if cls.behaviour in ("falling", "bouncing"):
            x0 = float(rng.uniform(margin, size - margin))
            y0 = float(rng.uniform(margin, size - margin - extent))  # top of the fall; floor at y0 + extent
        else:
            x0, y0 = (float(v) for v in rng.uniform(2 * margin, size - 2 * margin, 2))
    return SyntheticVideo(
        video_id=f"c{cls.index:02d}v{video:04d}",
        class_index=cls.index,
        shape=str(rng.choice(SHAPES)),
        colour=colour,
        rgb=_clip_rgb(rgb),
        stripe_rgb=_clip_rgb(stripe),
        radius=radius,
        orientation=float(rng.uniform(0, 2 * math.pi)),
        background=str(rng.choice(BACKGROUNDS)),
        background_rgb=(_clip_rgb(bg[0]), _clip_rgb(bg[1])),
        distractors=tuple(distractors),
        start=start,
        duration=duration,
        x0=x0,
        y0=y0,
        extent=extent,
        phase=phase,
        seed=int(np.random.SeedSequence(seed_words).generate_state(1)[0]),
    )


# ----------------------------------------------------------------------------- motion programs
# Trigonometry goes through the scalar C library, element by element: NumPy's vectorised sin / cos
# take different code paths for an array's aligned body and its tail, which can differ in the last
# bit, and one bit moves a shape's edge by a pixel (the videos would then differ from run to run).
def _sin(x: np.ndarray) -> np.ndarray:
    return np.array([math.sin(v) for v in np.asarray(x, dtype=np.float64).ravel()]).reshape(np.shape(x))


def _cos(x: np.ndarray) -> np.ndarray:
    return np.array([math.cos(v) for v in np.asarray(x, dtype=np.float64).ravel()]).reshape(np.shape(x))


def _profile(manner: str, u: np.ndarray) -> np.ndarray:
    """Displacement s(u) along the path for normalised action time u ∈ [0, 1]."""
    if manner == "moving":
        return u
    if manner == "pushing":  # fast start, decelerates, stops at 60 % of the action, 75 % of the path
        v = np.minimum(u / 0.6, 1.0)
        return 0.75 * (1.0 - (1.0 - v) ** 2)
    if manner == "back":
        return _sin(np.pi * u)
    if manner == "pretending":
        return 0.18 * _sin(np.pi * u)
    if manner == "faster":
        return u**2
    raise InputError(f"unknown manner {manner!r}")


def _trajectory(cls: SyntheticClass, spec: SyntheticVideo, n_frames: int) -> np.ndarray:
    """``[F, 4]`` per frame: x, y, radius, rotation angle of the object."""
    t = (np.arange(n_frames) + 0.5) / n_frames
    u = np.clip((t - spec.start) / spec.duration, 0.0, 1.0)
    x = np.full(n_frames, spec.x0)
    y = np.full(n_frames, spec.y0)
    r = np.full(n_frames, spec.radius)
    angle = np.full(n_frames, spec.orientation)
    if cls.behaviour:
        if cls.behaviour == "falling":  # free fall to the floor, one small bounce, rest
            fall = spec.extent
            y = np.where(
                u < 0.6,
                spec.y0 + fall * (u / 0.6) ** 2,
                spec.y0 + fall - 0.2 * fall * _sin(np.pi * np.clip((u - 0.6) / 0.25, 0, 1)),
            )
        elif cls.behaviour == "bouncing":  # three bounces off the floor at y0 + extent
            y = spec.y0 + spec.extent * (1.0 - np.abs(_sin(3 * np.pi * u)))
        else:  # spin in place, one full turn; +angle is clockwise on screen (y points down)
            sign = 1.0 if cls.behaviour == "spin_cw" else -1.0
            angle = spec.orientation + sign * 2 * np.pi * u
        return np.stack([x, y, r, angle], axis=1)
    s = _profile(cls.manner, u)
    direction = cls.direction
    if direction == "right":
        x = spec.x0 + s * spec.extent
    elif direction == "left":
        x = spec.x0 - s * spec.extent
    elif direction == "down":
        y = spec.y0 + s * spec.extent
    elif direction == "up":
        y = spec.y0 - s * spec.extent
    elif direction in ("towards", "away"):
        # The program fixes the sense (grow or shrink); the drawn extent only sets how much.
        factor = max(spec.extent, 1.0 / spec.extent)
        factor = factor if direction == "towards" else 1.0 / factor
        r = spec.radius * (1.0 + s * (factor - 1.0))
    else:  # orbit of 1.5 turns' worth of angle (270°) around (x0, y0)
        sign = 1.0 if direction == "cw" else -1.0
        theta = spec.phase + sign * 1.5 * np.pi * s
        x = spec.x0 + spec.extent * _cos(theta)
        y = spec.y0 + spec.extent * _sin(theta)
    return np.stack([x, y, r, angle], axis=1)


def _shape_mask(shape: str, lx: np.ndarray, ly: np.ndarray, r: float) -> np.ndarray:
    """Inside test in the object's local frame (``lx``, ``ly`` in pixels)."""
    if shape == "circle":
        return lx**2 + ly**2 <= r**2
    if shape == "cross":
        arm = 0.38 * r
        return ((np.abs(lx) <= r) & (np.abs(ly) <= arm)) | ((np.abs(ly) <= r) & (np.abs(lx) <= arm))
    sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
    normals = np.linspace(0, 2 * np.pi, sides, endpoint=False) + np.pi / sides
    projection = _cos(normals)[:, None, None] * lx + _sin(normals)[:, None, None] * ly  # [sides, H, W]
    return projection.max(0) <= r * math.cos(math.pi / sides)


def _paint(frame: np.ndarray, grid: tuple[np.ndarray, np.ndarray], shape: str, x: float, y: float, r: float,
           angle: float, rgb: Sequence[int], stripe_rgb: Sequence[int] | None) -> None:  # fmt: skip
    gx, gy = grid
    dx, dy = gx - x, gy - y
    cos, sin = math.cos(angle), math.sin(angle)
    lx, ly = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = _shape_mask(shape, lx, ly, r)
    frame[mask] = rgb
    if stripe_rgb is not None:
        # A stripe from the centre towards the local +x edge shows the orientation (rotation is visible).
        stripe = mask & (lx >= 0) & (np.abs(ly) <= max(0.7, 0.18 * r))
        frame[stripe] = stripe_rgb


def _background(spec: SyntheticVideo, size: int, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(spec.seed)
    a, b = (np.array(c, dtype=float) for c in spec.background_rgb)
    gx, gy = grid
    kind = spec.background
    if kind == "plain":
        weight = np.zeros((size, size))
    elif kind == "gradient":
        direction = rng.uniform(0, 2 * np.pi)
        weight = (math.cos(direction) * gx + math.sin(direction) * gy) / size
        weight = (weight - weight.min()) / max(np.ptp(weight), 1e-6)
    elif kind == "checkered":
        cell = int(rng.integers(4, 12))
        weight = ((gx // cell + gy // cell) % 2).astype(float)
    elif kind == "striped":
        width = int(rng.integers(3, 9))
        weight = (((gx if rng.random() < 0.5 else gy) // width) % 2).astype(float)
    else:  # noisy: smoothed random texture
        coarse = rng.random((size // 8 + 1, size // 8 + 1))
        weight = np.kron(coarse, np.ones((8, 8)))[:size, :size]
    frame = a + (b - a) * weight[..., None]
    for shape, x, y, r, angle, rgb in spec.distractors:  # static distractor objects
        _paint(frame, grid, shape, x, y, r, angle, rgb, None)
    return frame


def render_video(cls: SyntheticClass, spec: SyntheticVideo, config: SyntheticConfig) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 frames of one video (F = ``config.n_frames``, H = W = ``config.size``)."""
    size = config.size
    coords = np.arange(size) + 0.5
    grid = np.meshgrid(coords, coords, indexing="xy")
    background = _background(spec, size, grid)
    frames = np.empty((config.n_frames, size, size, 3), dtype=np.uint8)
    for f, (x, y, r, angle) in enumerate(_trajectory(cls, spec, config.n_frames)):
        frame = background.copy()
        _paint(frame, grid, spec.shape, x, y, r, angle, spec.rgb, spec.stripe_rgb)
        frames[f] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def _yuv_frame(image: np.ndarray) -> av.VideoFrame:
    """A yuv420p frame from ``[H, W, 3]`` RGB, with every byte of its buffers written.

    The conversion runs in NumPy (``fsar_train._yuv``), not in swscale, whose rounding depends on
    buffer alignment. The rows' padding is zeroed: libx264 reads a little past the visible chroma
    width, and uninitialised padding made the encoded bytes differ from run to run.
    """
    height, width = image.shape[:2]
    planes = rgb_to_yuv420p(image)  # [H*3/2, W]
    quarter = height // 4
    chroma = (width // 2, height // 2)
    data = (
        planes[:height],
        planes[height : height + quarter].reshape(chroma[1], chroma[0]),
        planes[height + quarter :].reshape(chroma[1], chroma[0]),
    )
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, values in zip(frame.planes, data, strict=True):
        buffer = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
        buffer[: values.shape[0], : values.shape[1]] = values
        plane.update(buffer)
    return frame


def encode_mp4(frames: np.ndarray, path: str | Path, fps: int) -> None:
    """Write ``[F, H, W, 3]`` uint8 frames as H.264 mp4 (one encoder thread: the bytes are reproducible)."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "g": "16", "threads": "1"}
        stream.codec_context.thread_count = 1
        for index, image in enumerate(frames):
            frame = _yuv_frame(image)
            frame.pts = index  # explicit timestamps (in 1/fps): x264's rate control reads them
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def caption(cls: SyntheticClass, spec: SyntheticVideo, size: int) -> str:
    """A procedurally generated caption: size, colour, shape, motion, direction, speed, scene."""
    ratio = spec.radius / size
    size_word = "small" if ratio < 0.09 else "medium-sized" if ratio < 0.15 else "large"
    thing = f"a {size_word} {spec.colour} {spec.shape}"
    directions = dict(DIRECTIONS)
    if cls.behaviour == "falling":
        motion = "falls down, bounces once and comes to rest"
    elif cls.behaviour == "bouncing":
        motion = "bounces up and down three times"
    elif cls.behaviour in ("spin_cw", "spin_ccw"):
        motion = f"spins in place {'clockwise' if cls.behaviour == 'spin_cw' else 'counterclockwise'}"
    else:
        d = directions[cls.direction]
        path = f"moves in an arc {d}" if cls.direction in ("cw", "ccw") else f"moves {d}"
        motion = {
            "moving": path,
            "pushing": f"{path}, slows down and stops",
            "back": f"{path} and returns",
            "pretending": f"starts to move {d} but returns",
            "faster": f"{path}, speeding up",
        }[cls.manner]
    extras = len(spec.distractors)
    others = "" if not extras else f", next to {extras} other object{'s' if extras > 1 else ''}"
    return f"{thing} {motion} {spec.speed} on a {spec.background} background{others}"


def synthetic_videos(config: SyntheticConfig) -> list[tuple[SyntheticClass, SyntheticVideo]]:
    """Every video's class and drawn parameters, class by class (no rendering)."""
    return [(cls, _draw_spec(cls, v, config)) for cls in synthetic_classes() for v in range(config.videos_per_class)]


def _relative(cls: SyntheticClass, spec: SyntheticVideo) -> str:
    return f"videos/{cls.slug}/{spec.video_id}.mp4"


def _write_one(task: tuple[SyntheticClass, SyntheticVideo, SyntheticConfig, str]) -> None:
    cls, spec, config, path = task
    frames = render_video(cls, spec, config)
    with atomic_path(path, suffix=".mp4") as tmp:
        encode_mp4(frames, tmp, config.fps)


def _params(config: SyntheticConfig) -> dict[str, Any]:
    params = asdict(config)
    params.pop("workers")  # how many processes wrote the files does not change them
    params["generator_version"] = GENERATOR_VERSION
    return params


def generate_synthetic_actions(
    root: str | Path, config: SyntheticConfig | None = None, *, progress: bool = True
) -> Path:
    """Generate synthetic-actions into ``root`` (idempotent).

    Args:
        root: output folder.
        config: size and seed; ``videos_per_class`` sets the size (44 classes).
        progress: draw a progress bar.

    Returns:
        ``root / "dataset.json"``.

    Raises:
        ValueError: ``root`` already holds synthetic-actions made with other parameters.

    Example:
        >>> import tempfile
        >>> from fsar_train import SyntheticConfig, generate_synthetic_actions
        >>> path = generate_synthetic_actions(tempfile.mkdtemp(), SyntheticConfig(videos_per_class=1, n_frames=4,
        ...     size=32, workers=1), progress=False)
        >>> path.name
        'dataset.json'
    """
    config = config or SyntheticConfig()
    if config.size % 2 or config.size < 16 or config.n_frames < 1 or config.videos_per_class < 1:
        raise InputError(f"need an even size >= 16, n_frames >= 1 and videos_per_class >= 1; got {config}")
    root = Path(root)
    info_path = root / "dataset.json"
    params = _params(config)
    if info_path.exists():
        saved = json.loads(info_path.read_text(encoding="utf-8"))
        if saved.get("params") != params:
            raise InputError(
                f"{root} holds synthetic-actions generated with {saved.get('params')}; this call asks for {params}. "
                "Use another folder or delete this one."
            )
        if saved.get("complete") and all((root / p).exists() for p in saved.get("files", [])):
            logger.info("synthetic-actions in %s is complete; nothing to do", root)
            return info_path
    started = time.perf_counter()
    items = synthetic_videos(config)
    todo = [(c, s, config, str(root / _relative(c, s))) for c, s in items if not (root / _relative(c, s)).exists()]
    logger.info("synthetic-actions: %d videos in %s, %d to write", len(items), root, len(todo))
    workers = config.workers or os.cpu_count() or 1
    with make_progress(progress) as bar:
        task = bar.add_task("synthetic-actions", total=len(items), completed=len(items) - len(todo), info="")
        if workers <= 1 or len(todo) < 8:
            for item in todo:
                _write_one(item)
                bar.advance(task)
        else:
            # fork: the workers need numpy and av only, and re-importing the package (torch) would cost seconds.
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            context = multiprocessing.get_context(method)
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                for _ in pool.map(_write_one, todo, chunksize=8):
                    bar.advance(task)
    _write_tables(root, items, params, started)
    return info_path


def _write_tables(root: Path, items: list[tuple[SyntheticClass, SyntheticVideo]], params: dict[str, Any],
                  started: float) -> None:  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["video_id", "path", "label", "class_index", "split", "manner", "direction", "behaviour", "caption", "shape",
         "colour", "radius_px", "background", "distractors", "speed", "start", "duration"]
    )  # fmt: skip
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for cls, spec in items:
        writer.writerow(
            [spec.video_id, _relative(cls, spec), cls.name, cls.index, cls.split, cls.manner, cls.direction,
             cls.behaviour, caption(cls, spec, params["size"]), spec.shape, spec.colour, f"{spec.radius:.2f}",
             spec.background, len(spec.distractors), spec.speed, f"{spec.start:.3f}", f"{spec.duration:.3f}"]
        )  # fmt: skip
        splits[cls.split].append(f"{cls.name}/{spec.video_id}")
    atomic_write_text(root / "manifest.csv", buffer.getvalue())
    for split, lines in splits.items():
        atomic_write_text(root / "splits" / f"{split}.txt", "\n".join(lines) + "\n")
    classes = synthetic_classes()
    atomic_write_json(
        root / "dataset.json",
        {
            "name": "synthetic-actions",
            "params": params,
            "grammar": {
                "manners": [t for _, t in MANNERS],
                "directions": [w for _, w in DIRECTIONS],
                "behaviours": [n for _, n in BEHAVIOURS],
                "split_rule": "(d - 2m) mod 8 in {4, 5}: test; 6: val; else train; behaviours: train",
            },
            "classes": {s: [c.name for c in classes if c.split == s] for s in ("train", "val", "test")},
            "videos": len(items),
            "files": [_relative(c, s) for c, s in items],
            "seconds": round(time.perf_counter() - started, 2),
            "complete": True,
        },
    )
