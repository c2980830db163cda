"""The contest itself: the environment with the contest's rules, the server and its
protocol, the client agents use, the records of a run, and the runner that starts one
agent against one server (`python -m evaluation serve`, `run`)."""
