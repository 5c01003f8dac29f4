python -m validation.dmc --task cheetah.run --mode short --out runs/dmc/cheetah.run/short-p23 --threads 1 \
  --env-steps 30000 \
  --set model.hidden=100 --set model.deter=100 --set model.embed=100 --set model.stoch=20 \
  --set model.updates_per_episode=50 --set phase2_env_steps=3000 --set eval_episodes=3 \
  --set eval_every=0 --set ppo.iterations=2 --set latent.batch=8 --set ppo.states_per_iteration=100 \
  --phase 2 --from-checkpoint runs/dmc/cheetah.run/short/checkpoints/phase1_final.pt --fresh
