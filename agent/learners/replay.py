"""Rainbow's replay: prioritized, n-step, and storing each 84×84 frame once.

    replay = FrameReplay(capacity=500_000, frame_shape=(84, 84), stack=4, n_step=3, gamma=0.99)
    replay.start(obs[:, -1])                                   # first frames of E environments
    ready = replay.add(actions, rewards, dones, next_obs[:, -1])  # one step of every environment
    batch = replay.sample(32, rng)                             # stacked obs, n-step returns, ...
    replay.update_priorities(batch.slots, errors)

Classes: `PriorityTree` (sums and minimum of the priorities, for proportional sampling),
`FrameReplay` (the buffer) and `ReplayBatch` (what `sample` returns).

Memory: a 4-frame stacked observation shares 3 frames with its neighbour, and the next
observation of an n-step transition is a later step's observation, so storing each step's newest
frame once (uint8) holds everything: about 7.1 kB per transition instead of 2 × 4 × 7056 bytes
for naive (obs, next_obs) pairs (`benchmarks/rainbow_memory.py` measures it).

Layout: E environments step in lockstep; step t of environment e is global index t·E + e and
lives in slot (t·E + e) mod `slots`. A stacked observation reads the frames E, 2E, 3E slots back,
and stops at the first frame of its episode (which it repeats, as the agent's FrameStack does on
reset), so a stack never crosses episodes. The n-step window reads the next n steps of its
environment and ends at the first `done`.

Prioritization follows anyrl 0.11.17's `PrioritizedReplayBuffer` (the contest's Rainbow):
a transition enters with the largest error ever reported (1 before any), priority
(error + ε)^α, sampling proportional to priority with replacement, importance weights
(N·P(i))^−β divided by the largest possible one, (N·P_min)^−β. Like anyrl's `NStepPlayer`, a
transition becomes sampleable once its n-step window is complete or its episode has ended.
"""

from __future__ import annotations

import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sonic_common.files import atomic_open

# what `save` writes besides the arrays: the counters that say where the buffer stands
_SCALARS = ("capacity", "stack", "n_step", "nenvs", "written", "size", "max_error")


class PriorityTree:
    """Sum and minimum of non-negative priorities over `size` slots (binary trees in arrays).

    `find(u)` maps u ∈ [0, total) to the slot whose prefix-sum interval holds u, so uniform u
    samples slots in proportion to their priority. Zero priority means "not stored".
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.leaves = 1 << max(0, (size - 1).bit_length())
        self.sums = np.zeros(2 * self.leaves, dtype=np.float64)
        self.mins = np.full(2 * self.leaves, np.inf, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.sums[1])

    @property
    def min(self) -> float:
        """The smallest positive priority (inf when none)."""
        return float(self.mins[1])

    def __getitem__(self, slots: np.ndarray) -> np.ndarray:
        return self.sums[np.asarray(slots) + self.leaves]

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        pos = np.asarray(slots, dtype=np.int64) + self.leaves
        values = np.asarray(values, dtype=np.float64)
        self.sums[pos] = values
        self.mins[pos] = np.where(values > 0, values, np.inf)
        if len(pos) == 1:  # one slot (each environment step): a plain loop is ~20× faster
            i = int(pos[0]) // 2
            sums, mins = self.sums, self.mins
            while i >= 1:
                sums[i] = sums[2 * i] + sums[2 * i + 1]
                mins[i] = min(mins[2 * i], mins[2 * i + 1])
                i //= 2
            return
        pos = np.unique(pos // 2)
        while len(pos):
            self.sums[pos] = self.sums[2 * pos] + self.sums[2 * pos + 1]
            self.mins[pos] = np.minimum(self.mins[2 * pos], self.mins[2 * pos + 1])
            pos = np.unique(pos[pos > 1] // 2)

    def find(self, u: np.ndarray) -> np.ndarray:
        pos = np.ones(len(u), dtype=np.int64)
        u = np.asarray(u, dtype=np.float64).copy()
        while pos[0] < self.leaves:
            left = 2 * pos
            go_right = u >= self.sums[left]
            u = np.where(go_right, u - self.sums[left], u)
            pos = np.where(go_right, left + 1, left)
        # u at or past the total (float rounding in the sums) walks into the padding leaves
        return np.minimum(pos - self.leaves, self.size - 1)


@dataclass
class ReplayBatch:
    slots: np.ndarray  # (B,) where each transition lives, for update_priorities
    obs: np.ndarray  # (B, stack, H, W) uint8
    actions: np.ndarray  # (B,) int64
    returns: np.ndarray  # (B,) float32: Σ γ^i r_{t+i} over the window, up to the episode end
    discounts: np.ndarray  # (B,) float32: γ^n, or 0 when the episode ended inside the window
    next_obs: np.ndarray  # (B, stack, H, W) uint8; a copy of obs where discounts is 0
    weights: np.ndarray  # (B,) float32 importance-sampling weights, at most 1


class FrameReplay:
    """Prioritized n-step replay over E lockstep environments, each frame stored once."""

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        *,
        stack: int = 4,
        n_step: int = 3,
        gamma: float = 0.99,
        nenvs: int = 1,
        alpha: float = 0.5,
        beta: float = 0.4,
        epsilon: float = 0.1,
        first_max: float = 1.0,
    ) -> None:
        if capacity <= (n_step + stack) * nenvs:
            raise ValueError(
                f"replay capacity {capacity} is too small for n_step {n_step}, "
                f"stack {stack} and {nenvs} environment(s)"
            )
        self.capacity, self.stack, self.n_step, self.nenvs = capacity, stack, n_step, nenvs
        self.gamma, self.alpha, self.beta, self.epsilon = gamma, alpha, beta, epsilon
        # the newest `capacity` steps, plus room for the frames their stacks reach back to
        self.slots = capacity + (stack + 1) * nenvs
        self.frames = np.zeros((self.slots, *frame_shape), dtype=np.uint8)
        self.first = np.zeros(self.slots, dtype=bool)  # the frame starts an episode
        self.actions = np.zeros(self.slots, dtype=np.int64)
        self.rewards = np.zeros(self.slots, dtype=np.float32)
        self.dones = np.zeros(self.slots, dtype=bool)
        self.ready = np.zeros(self.slots, dtype=bool)
        self.tree = PriorityTree(self.slots)
        self.written = 0  # global index of the current (not yet acted) step of environment 0
        self.size = 0  # sampleable transitions
        self.max_error = float(first_max)
        self._pending: list[deque[int]] = [deque() for _ in range(nenvs)]

    def nbytes(self) -> int:
        arrays = (
            self.frames,
            self.first,
            self.actions,
            self.rewards,
            self.dones,
            self.ready,
            self.tree.sums,
            self.tree.mins,
        )
        return sum(a.nbytes for a in arrays)

    def save(self, path: Path) -> None:
        """Write the buffer to `path` (.npz, atomically): only the slots written so far, so a
        buffer far from full costs what it holds, not its capacity."""
        used = min(self.written + self.nenvs, self.slots)
        arrays = {
            "frames": self.frames[:used],
            **{n: getattr(self, n)[:used] for n in ("first", "actions", "rewards", "dones")},
            "ready": self.ready[:used],
            "tree_sums": self.tree.sums,
            "tree_mins": self.tree.mins,
            "pending": np.array([g for p in self._pending for g in p], dtype=np.int64),
            "pending_lens": np.array([len(p) for p in self._pending], dtype=np.int64),
            **{n: np.array(getattr(self, n)) for n in _SCALARS},
        }
        with atomic_open(path) as f:
            np.savez(f, **arrays)

    def load(self, path: Path) -> None:
        """Restore a buffer `save` wrote; its shapes and settings must be this buffer's."""
        with np.load(path) as data:
            saved = {n: data[n].item() for n in _SCALARS}
            mine = {n: getattr(self, n) for n in ("capacity", "stack", "n_step", "nenvs")}
            if any(saved[n] != v for n, v in mine.items()):
                raise ValueError(f"the saved replay ({saved}) is not this buffer ({mine})")
            used = _read_frames_into(Path(path), self.frames)
            for n in ("first", "actions", "rewards", "dones", "ready"):
                getattr(self, n)[:used] = data[n]
            self.tree.sums[:] = data["tree_sums"]
            self.tree.mins[:] = data["tree_mins"]
            ends = np.cumsum(data["pending_lens"])
            self._pending = [
                deque(int(g) for g in part) for part in np.split(data["pending"], ends[:-1])
            ]
        self.written, self.size = int(saved["written"]), int(saved["size"])
        self.max_error = float(saved["max_error"])

    def start(self, frames: np.ndarray) -> None:
        """The first frames of all environments (after reset), shape (E, H, W)."""
        slots = (self.written + np.arange(self.nenvs)) % self.slots
        self.frames[slots] = frames
        self.first[slots] = True

    def add(
        self, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray, next_frames: np.ndarray
    ) -> np.ndarray:
        """One step of every environment: the action taken in the current frame, its reward,
        whether the episode ended, and the newest frame of the next observation (after an
        episode end: the new episode's first frame). Returns the global indices of the
        transitions that became sampleable, oldest first."""
        E = self.nenvs
        slots = (self.written + np.arange(E)) % self.slots
        self.actions[slots] = actions
        self.rewards[slots] = rewards
        self.dones[slots] = dones
        self._evict(self.written - self.capacity, self.written + E - self.capacity)
        step = self.written
        self.written += E
        nxt = (self.written + np.arange(E)) % self.slots
        self.frames[nxt] = next_frames
        self.first[nxt] = dones
        ready: list[int] = []
        for e in range(E):
            pending = self._pending[e]
            pending.append(step + e)
            if dones[e]:
                ready.extend(pending)
                pending.clear()
            elif len(pending) == self.n_step:
                ready.append(pending.popleft())
        ready_arr = np.array(
            sorted(g for g in ready if g >= self.written - self.capacity), dtype=np.int64
        )
        if len(ready_arr):
            ready_slots = ready_arr % self.slots
            self.ready[ready_slots] = True
            self.size += len(ready_arr)
            self.tree.set(ready_slots, np.full(len(ready_arr), self._priority(self.max_error)))
        return ready_arr

    def _evict(self, lo: int, hi: int) -> None:
        if hi <= 0:
            return
        slots = np.arange(max(lo, 0), hi) % self.slots
        slots = slots[self.ready[slots]]
        if len(slots):
            self.ready[slots] = False
            self.size -= len(slots)
            self.tree.set(slots, np.zeros(len(slots)))

    def _priority(self, error: np.ndarray | float) -> np.ndarray:
        return (np.asarray(error, dtype=np.float64) + self.epsilon) ** self.alpha

    def update_priorities(self, slots: np.ndarray, errors: np.ndarray) -> None:
        """New errors (anyrl: the weighted losses) for sampled transitions; the last of a
        repeated slot wins."""
        errors = np.asarray(errors, dtype=np.float64)
        self.max_error = max(self.max_error, float(errors.max()))
        slots = np.asarray(slots)
        keep = self.ready[slots]  # never revive a transition evicted since it was sampled
        self.tree.set(slots[keep], self._priority(errors[keep]))

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        total = self.tree.total
        slots = self.tree.find(rng.uniform(0.0, total, batch_size))
        empty = ~self.ready[slots]  # float rounding at an interval's edge: draw again
        while empty.any():
            slots[empty] = self.tree.find(rng.uniform(0.0, total, int(empty.sum())))
            empty = ~self.ready[slots]
        probs = self.tree[slots] / total
        weights = (probs * self.size) ** -self.beta / (
            self.tree.min / total * self.size
        ) ** -self.beta
        returns, discounts = self.n_step_returns(slots)
        obs = self.stacked(slots)
        next_obs = obs.copy()
        live = discounts > 0
        if live.any():
            next_obs[live] = self.stacked(slots[live] + self.n_step * self.nenvs)
        return ReplayBatch(
            slots,
            obs,
            self.actions[slots].copy(),
            returns,
            discounts,
            next_obs,
            weights.astype(np.float32),
        )

    def stacked(self, slots: np.ndarray) -> np.ndarray:
        """The stacked observations (oldest frame first) of the steps in `slots`."""
        offsets = (np.arange(self.stack) - (self.stack - 1)) * self.nenvs
        idx = (np.asarray(slots)[:, None] + offsets) % self.slots
        first = self.first[idx]
        for j in range(self.stack - 2, -1, -1):  # before an episode's first frame: repeat it
            later_start = first[:, j + 1]
            idx[:, j] = np.where(later_start, idx[:, j + 1], idx[:, j])
            first[:, j] |= later_start
        return self.frames[idx]

    def n_step_returns(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Σ_{i<k} γ^i r_{t+i}, γ^k or 0) with k = n, or the steps up to the episode's end."""
        idx = (np.asarray(slots)[:, None] + np.arange(self.n_step) * self.nenvs) % self.slots
        dones = self.dones[idx]
        counted = (np.cumsum(dones, axis=1) - dones) == 0  # no episode end before step i
        powers = self.gamma ** np.arange(self.n_step)
        returns = (self.rewards[idx] * counted * powers).sum(axis=1)
        ended = (dones & counted).any(axis=1)
        discounts = np.where(ended, 0.0, self.gamma**self.n_step)
        return returns.astype(np.float32), discounts.astype(np.float32)


def _read_frames_into(path: Path, dest: np.ndarray) -> int:
    """The saved frames read straight into `dest` (not through a second array: at full capacity
    the frames are 3.5 GB); returns how many there were."""
    fmt = np.lib.format
    with zipfile.ZipFile(path) as z, z.open("frames.npy") as f:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype != dest.dtype or tuple(shape[1:]) != dest.shape[1:]:
            raise ValueError(
                f"the saved replay's frames ({shape[1:]}, {dtype}) are not this buffer's "
                f"({dest.shape[1:]}, {dest.dtype})"
            )
        if shape[0] > len(dest):
            raise ValueError(f"the saved replay holds {shape[0]} frames, more than {len(dest)}")
        flat = dest[: shape[0]].reshape(-1)  # a view: dest is C-contiguous
        done = 0
        while done < flat.size:  # 64 MB at a time
            chunk = f.read(min(1 << 26, (flat.size - done) * dest.itemsize))
            if not chunk:
                raise EOFError(f"{path} ends inside its frames")
            part = np.frombuffer(chunk, dtype=dest.dtype)
            flat[done : done + len(part)] = part
            done += len(part)
    return int(shape[0])
