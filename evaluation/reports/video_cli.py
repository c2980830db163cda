"""`python -m evaluation video --run D [--episode best|N] --video FILE.gif|.mp4`.

Replays one recorded episode of a run made with `--record` (stable-retro `.bk2` movies in
`D/movies/`, one per episode, in episode order) and writes its frames as a GIF (Pillow) or an
MP4 (OpenCV). `best` picks the finished episode with the highest return in `D/monitor.csv`
(the cut-off episode when none finished). Episodes are numbered from 0, as monitor.csv's rows.

A movie holds every emulator frame (4 per agent step); `--every` keeps one frame in that many
(default 4: one per agent step, played at 15 fps — real time at the Genesis' 60 Hz).
One emulator per process: the replay runs in this process, which must not hold another.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np

from evaluation.contest import records
from sonic_common.errors import UserError, exit_on_user_error
from sonic_common.files import write_atomic

MOVIES = "movies"


def movie_files(results_dir: Path) -> list[Path]:
    """The run's movies in episode order (by the episode number at the end of the name)."""

    def key(p: Path) -> tuple[int, str]:
        m = re.search(r"(\d+)$", p.stem)
        return (int(m.group(1)) if m else -1, p.name)

    return sorted((results_dir / MOVIES).glob("*.bk2"), key=key)


def pick_episode(results_dir: Path, episode: str) -> int:
    if episode != "best":
        try:
            n = int(episode)
        except ValueError:
            raise UserError(
                f"--episode {episode!r}: give `best` or an episode number (0 for the first)"
            ) from None
        return n
    monitor = results_dir / records.MONITOR
    if not monitor.is_file():
        raise UserError(
            f"{monitor} does not exist: `--episode best` needs the run's "
            "monitor.csv; give --episode N instead"
        )
    rows = records.read_monitor(monitor)[1]
    finished = [i for i, row in enumerate(rows) if not row.cut] or list(range(len(rows)))
    if not finished:
        raise UserError(f"{monitor} lists no episode: give --episode N instead")
    return max(finished, key=lambda i: rows[i].r)


def replay(movie_path: Path, every: int = 4, max_frames: int | None = None) -> list[np.ndarray]:
    """The frames of a .bk2 movie, replayed in a stable-retro emulator (one in this process)."""
    import stable_retro

    movie = stable_retro.Movie(str(movie_path))
    movie.step()
    env = stable_retro.make(
        game=movie.get_game(),
        state=None,
        use_restricted_actions=stable_retro.Actions.ALL,
        players=movie.players,
        render_mode=None,
        inttype=stable_retro.data.Integrations.ALL,
    )
    try:
        env.initial_state = movie.get_state()
        obs, _ = env.reset()
        buttons = env.unwrapped.num_buttons
        frames = [obs]
        n = 0
        while movie.step():
            keys = [movie.get_key(i, p) for p in range(movie.players) for i in range(buttons)]
            obs, *_ = env.step(keys)
            n += 1
            if n % every == 0:
                frames.append(obs)
                if max_frames is not None and len(frames) >= max_frames:
                    break
        return frames
    finally:
        env.close()


def scale_frames(frames: list[np.ndarray], scale: float) -> list[np.ndarray]:
    if scale == 1.0:
        return frames
    import cv2

    h, w = frames[0].shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


def encode_gif(frames: list[np.ndarray], fps: float) -> bytes:
    import io

    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
        optimize=False,
    )
    return buf.getvalue()


def write_mp4(frames: list[np.ndarray], fps: float, out: Path) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write MP4 to {out}: write a .gif instead")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    tmp.replace(out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m evaluation video",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--run",
        "--results-dir",
        dest="run",
        required=True,
        type=Path,
        metavar="DIR",
        help="a run's results directory (its --out), made with "
        "--record (--results-dir: its old name)",
    )
    ap.add_argument(
        "--episode",
        default="best",
        help="`best` (highest return in monitor.csv) or an episode number from 0",
    )
    ap.add_argument(
        "--video",
        "--out",
        dest="video",
        required=True,
        type=Path,
        metavar="FILE",
        help="FILE.gif or FILE.mp4 to write (--out: its old name)",
    )
    ap.add_argument(
        "--every",
        type=int,
        default=4,
        help="keep one emulator frame in this many (default 4: one per agent step)",
    )
    ap.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frames per second of the video (default: real time, 60/every)",
    )
    ap.add_argument("--scale", type=float, default=1.0, help="resize frames by this factor")
    ap.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    return ap.parse_args(argv)


def check_numbers(args: argparse.Namespace) -> None:
    """--every, --scale, --fps and --max-frames: refused when they make no video, before the
    replay."""
    if args.every < 1:
        raise UserError(f"--every {args.every}: give at least 1")
    if not (math.isfinite(args.scale) and 0 < args.scale <= 16):
        raise UserError(f"--scale {args.scale}: give a factor above 0, at most 16")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= 100):
        raise UserError(f"--fps {args.fps}: give frames per second above 0, at most 100")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames {args.max_frames}: give at least 1")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(argv or []))
    suffix = args.video.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise UserError(f"--video {args.video}: name a .gif or .mp4 file")
    check_numbers(args)
    if args.video.is_dir():
        raise UserError(f"--video {args.video} is a directory: name a file in it")
    d: Path = args.run
    if not d.is_dir():
        raise UserError(f"--run {d}: no such run directory")
    movies = movie_files(d)
    if not movies:
        raise UserError(
            f"no movie in {d / MOVIES}: record the run with `python -m evaluation run ... --record`"
        )
    n = pick_episode(d, args.episode)
    if not 0 <= n < len(movies):
        raise UserError(
            f"episode {n} has no movie: {d / MOVIES} holds episodes 0..{len(movies) - 1}"
        )
    frames = scale_frames(replay(movies[n], args.every, args.max_frames), args.scale)
    fps = args.fps or 60.0 / args.every
    args.video.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        write_atomic(args.video, encode_gif(frames, fps))
    else:
        write_mp4(frames, fps, args.video)
    print(f"{args.video}: episode {n} ({movies[n].name}), {len(frames)} frames at {fps:g} fps")
    return 0
