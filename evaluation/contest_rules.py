"""The contest's numbers (see shared/reference/contest.md). Facts, not hyperparameters."""

FRAMES_PER_STEP = 4  # each agent step runs 4 emulator frames
STICK_PROB = 0.25  # probability the previous action sticks for the first frame of a step
EPISODE_STEPS = 4500  # 18,000 frames: 5 minutes of game time
BUDGET_STEPS = 1_000_000  # timesteps per test level
WALLCLOCK_S = 12 * 3600  # wall-clock limit per test level
MAX_EPISODE_RETURN = 10_000.0  # 9000 for progress + up to 1000 completion bonus (Sonic)
OBS_SHAPE = (224, 320, 3)  # Genesis frame; other systems differ (Atari 2600: 210x160x3)
GENESIS_BUTTONS = ("B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z")
