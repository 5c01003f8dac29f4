# Phase 3 of the cheetah short run, from phase 2's final checkpoint, with a minimal PPO budget
# (1 iteration of 1 episode on 50 states, 1 eval episode) to fit the session's time.
python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short-p3 --threads 1 \
  --env-steps 30000 \
  --set model.hidden=100 --set model.deter=100 --set model.embed=100 --set model.stoch=20 \
  --set model.updates_per_episode=50 --set phase2_env_steps=3000 --set eval_episodes=1 --set ppo.episodes_per_iteration=1 --set ppo.minibatch=50 \
  --set eval_every=0 --set ppo.iterations=1 --set latent.batch=8 --set ppo.states_per_iteration=50 \
  --phase 3 --from-checkpoint runs/dmc/cheetah.run/short-p23/checkpoints/phase2_final.pt --fresh
