"""The learning algorithms: PPO (ppo, rollout), Rainbow (rainbow, replay) and the MAML inner
step's maths (adaptation, linear_baseline). Entry points (agent/<name>.py) and offline training
(agent/training/) use them; meta_train builds on adaptation and linear_baseline."""
