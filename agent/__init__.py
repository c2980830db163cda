"""Everything that runs inside an agent container: wrappers, policies, learners, entry points."""
