"""Small GIFs of each agent's best and median episode per level, for reports of recorded suites.

Among the finished episodes of all seeds of one agent on one level (the cut-off ones when none
finished), `best` is the one with the highest return and `median` the one at the lower median of
the returns. Each is replayed from its run's `.bk2` movie (`video_cli.replay`, one emulator at a
time in this process) and written to `DIR/videos/<agent>/<level slug>/{best,median}.gif`: frames
downscaled by `SCALE`, one kept in `EVERY` emulator frames, at most `MAX_FRAMES` (the episode's
start). `videos/index.json` remembers which episode each GIF shows, so a report written again
replays only what changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evaluation.contest.records import EpisodeRow

SCALE = 0.5
EVERY = 8  # one frame in 8 emulator frames, played at 15 fps: twice real time
FPS = 15.0
MAX_FRAMES = 120  # 8 s of GIF, 16 s of play
INDEX = "index.json"


@dataclass(frozen=True)
class Pick:
    kind: str  # best | median
    run_dir: Path
    seed: int
    episode: int  # index in the run's monitor.csv and movies
    ret: float


def pick_episodes(runs: list[tuple[Path, int, list[EpisodeRow]]]) -> list[Pick]:
    """The best and median episodes over (run dir, seed, monitor rows) of one agent and level."""
    every = [(d, s, i, e) for d, s, rows in runs for i, e in enumerate(rows)]
    chosen = [x for x in every if not x[3].cut] or every
    if not chosen:
        return []
    ranked = sorted(chosen, key=lambda x: (x[3].r, -x[1], -x[2]))
    best, median = ranked[-1], ranked[(len(ranked) - 1) // 2]
    return [
        Pick(kind, d, s, i, float(e.r))
        for kind, (d, s, i, e) in (("best", best), ("median", median))
    ]


def make_gif(pick: Pick, path: Path) -> bool:
    """Replay the picked episode into `path`; False when its movie is missing."""
    from evaluation.reports.video_cli import encode_gif, movie_files, replay, scale_frames
    from sonic_common.files import write_atomic

    movies = movie_files(pick.run_dir)
    if pick.episode >= len(movies):
        return False
    frames = scale_frames(replay(movies[pick.episode], EVERY, MAX_FRAMES), SCALE)
    write_atomic(path, encode_gif(frames, FPS))
    return True


def episode_gifs(
    out_dir: Path, cells: dict[tuple[str, str, str], list[tuple[Path, int, list[EpisodeRow]]]]
) -> dict[tuple[str, str], list[tuple[Pick, Path]]]:
    """GIFs for every (agent, level, level slug) cell with movies: {(agent, level): [(pick,
    path)]}; paths are relative to `out_dir`."""
    videos = out_dir / "videos"
    index_path = videos / INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    out: dict[tuple[str, str], list[tuple[Pick, Path]]] = {}
    for (agent, level, slug), runs in cells.items():
        if not any((d / "movies").is_dir() for d, _, _ in runs):
            continue
        for pick in pick_episodes(runs):
            rel = Path("videos") / agent / slug / f"{pick.kind}.gif"
            key = rel.as_posix()
            source = f"{pick.run_dir.resolve()}/{pick.episode}"
            fresh = index.get(key) == source and (out_dir / rel).is_file()
            if fresh or make_gif(pick, out_dir / rel):
                index[key] = source
                out.setdefault((agent, level), []).append((pick, rel))
    if index:
        from sonic_common.files import write_atomic

        write_atomic(index_path, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return out
